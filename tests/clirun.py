"""Run the ``aioduet`` command in a subprocess, as a user would, and capture what it says."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_aioduet(
    *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m aioduet ARGS``; its exit status is for the caller to check."""
    return subprocess.run(
        [sys.executable, "-m", "aioduet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@contextlib.contextmanager
def daemon_process(socket_path: Path) -> Iterator[subprocess.Popen[str]]:
    """``aioduet daemon`` (scan sources) on ``socket_path``, ready; killed on the way out."""
    command = ["daemon", "--socket", str(socket_path), "--sources", "scan", "--interval", "0.05"]
    process = subprocess.Popen(
        [sys.executable, "-m", "aioduet", *command], stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        log = []
        for line in process.stderr:  # ends if the daemon exits
            log.append(line)
            if " ready: " in line:
                break
        assert socket_path.exists(), "".join(log)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
