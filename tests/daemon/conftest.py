"""Fixtures of the daemon's tests: real ``aioduet daemon`` processes, killed by pid afterwards."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # daemonproc, beside this file

from daemonproc import DaemonProcess

#: The options every test daemon runs with (the scan sources, polling fast).
SCAN = ("--sources", "scan", "--interval", "0.05")

SpawnFn = Callable[..., DaemonProcess]


@pytest.fixture
def spawn() -> Iterator[SpawnFn]:
    """Start daemons: ``spawn(*options, socket=None, wait=True)``; all are killed afterwards.

    Their sockets are in a fresh directory of mode 0755, so that a client that is not root
    can reach them (pytest's own temporary directories are 0700).
    """
    started: list[DaemonProcess] = []
    where = Path(tempfile.mkdtemp(prefix="aioduet-daemon-", dir="/tmp"))
    where.chmod(0o755)

    def start(*options: str, socket: str | Path | None = None, wait: bool = True) -> DaemonProcess:
        path = socket if socket is not None else where / f"d{len(started)}.sock"
        chosen: Sequence[str] = options or SCAN
        daemon = DaemonProcess.start(path, chosen, wait=False)
        started.append(daemon)
        if wait:
            daemon.wait_ready()
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.kill()
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture
def daemon(spawn: SpawnFn) -> DaemonProcess:
    """A daemon with the scan sources (residency polling every 50 ms)."""
    return spawn()
