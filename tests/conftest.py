"""Shared fixtures: event-loop backends and fresh directories on ext4."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
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
