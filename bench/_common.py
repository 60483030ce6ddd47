"""What the benchmark scripts share: progress on stderr, the JSON report, and sizes written
like fio's."""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def log(message: str) -> None:
    """One line of progress on stderr (stdout carries the JSON)."""
    print(message, file=sys.stderr, flush=True)


def write_report(figures: dict[str, Any], path: Path | None) -> None:
    """The benchmark's JSON object: on stdout, and in ``path`` too when given (``--json``)."""
    text = json.dumps(figures, indent=2)
    if path is not None:
        path.write_text(text + "\n")
    sys.stdout.write(text + "\n")


def wait_listening(
    process: subprocess.Popen[Any],
    path: Path,
    detail: Callable[[], str],
    while_waiting: Callable[[], None] = lambda: None,
    seconds: float = 60.0,
) -> None:
    """Wait until the daemon ``process`` answers on its socket ``path``.

    Raises:
        RuntimeError: it exited first (with ``detail()``, its log), or did not listen in time.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the daemon exited ({process.returncode}): {detail()}")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))
            return
        while_waiting()
        time.sleep(0.05)
    raise RuntimeError(f"the daemon did not listen within {seconds:g} s")


def binary_size(text: str) -> int:
    """``4096``, ``8M``, ``1.5G``: bytes, in binary units (an argparse type).

    Raises:
        argparse.ArgumentTypeError: not a number with an optional K, M or G.
    """
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"size must be a number with K, M or G, not {text!r}")
    try:
        return int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be a number, not {text!r}") from None
