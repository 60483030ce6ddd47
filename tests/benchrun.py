"""Running the benchmarks of ``bench/`` the way the smoke tests do: tiny sizes, JSON back.

The smoke profile of ``python -m bench`` runs every benchmark once per test session (the
``bench_suite`` fixture of conftest.py); each ``tests/test_bench_*.py`` checks its part of
that run with :func:`bench_report`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``args`` in a fresh interpreter; its JSON report."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report


class SuiteRun(NamedTuple):
    """One run of ``python -m bench``: its JSON report, exit status and progress, and the
    directory holding the report, the regenerated copy of docs/performance.md and the plots."""

    report: dict[str, Any]
    returncode: int
    stderr: str
    work: Path


def run_suite(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bench`` with ``args`` from the repository root (its exit status is the
    caller's to check)."""
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def bench_report(suite: dict[str, Any], name: str) -> dict[str, Any]:
    """The report of the benchmark ``name`` in the runner's ``suite`` report.

    Skips the test when the runner skipped the benchmark because it needs root and we are
    not root (as root, a skipped benchmark fails the test); fails it, with the benchmark's
    last lines of progress, when the benchmark failed.
    """
    record: dict[str, Any] = suite["benchmarks"][name]
    if "skipped" in record:
        cannot = pytest.skip if os.geteuid() != 0 else pytest.fail
        cannot(f"{name}: {record['skipped']}")
    tail = "\n".join(record.get("stderr_tail", []))
    assert "error" not in record, f"{name}: {record['error']}\n{tail}"
    assert record["left_behind"] == [], f"{name} left files behind: {record['left_behind']}"
    assert not record.get("left_running"), f"{name} left processes running"
    report: dict[str, Any] = record["report"]
    return report
