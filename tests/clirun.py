"""Run the ``aioduet`` command in a subprocess, as a user would, and capture what it says."""

from __future__ import annotations

import subprocess
import sys
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
