"""Fixtures of the fault tests: one event loop, both source sets, and a leak check.

Every fault test takes the ``leaks`` fixture: it counts this process's open fds, its threads
(other than anyio's idle worker threads, which outlive a framework by design), its child
processes (tracefs guards) and the tracefs instances named after it, before the test and
after it (the event loop is closed by then), and fails the test when any count grew.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # faultkit, beside this file

from faultkit import SOURCE_SETS, Resources


@pytest.fixture
def anyio_backend() -> str:
    """One loop: these tests are about the kernel and the sources, not the loop."""
    return "asyncio"


@pytest.fixture(params=SOURCE_SETS)
def source_set(request: pytest.FixtureRequest) -> str:
    """``"scan"`` or ``"exact"``: ``open_duet``'s ``sources`` argument."""
    name: str = request.param
    return name


@pytest.fixture
def leaks() -> Iterator[None]:
    """Fail the test if it leaves more fds, threads, children or tracefs instances behind."""
    before = Resources.now()
    yield
    leaked = Resources.now().leaked_since(before)
    assert not leaked, f"leaked: {leaked}"
