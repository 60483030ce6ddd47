"""Shared fixtures: event-loop backends, fresh directories on ext4, and one smoke run of every
benchmark."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchrun import ROOT, SuiteRun, run_suite
from frameworks import Frameworks

#: The task API runs on every loop anyio gives us: asyncio, asyncio on uvloop, and trio.
BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, object]]:
    backend: tuple[str, dict[str, object]] = request.param
    return backend


@pytest.fixture
def ext4_dir() -> Iterator[Path]:
    """A fresh directory under /tmp, which is ext4 on this machine kind (never tmpfs)."""
    path = Path(tempfile.mkdtemp(prefix="aioduet-test-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=["embedded", "daemon"])
def frameworks(request: pytest.FixtureRequest) -> Frameworks:
    """Opens an embedded framework, or a daemon's client: the task API runs on both."""
    return Frameworks(request.param)


@pytest.fixture(scope="session")
def bench_suite(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """``python -m bench --profile smoke``, once per session: every benchmark at tiny sizes,
    its tables and plots made into a copy of docs/performance.md (never the page itself)."""
    work = tmp_path_factory.mktemp("bench-suite")
    shutil.copy(ROOT / "docs" / "performance.md", work / "performance.md")
    result = run_suite(
        *("--profile", "smoke", "--dir", str(work), "--out", str(work / "smoke.json")),
        *("--docs", str(work / "performance.md"), "--plots", str(work / "img")),
    )
    out = work / "smoke.json"
    assert out.is_file(), f"python -m bench wrote no report ({result.returncode}):\n{result.stderr}"
    return SuiteRun(json.loads(out.read_text()), result.returncode, result.stderr, work)
