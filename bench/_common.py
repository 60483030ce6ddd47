"""What the benchmark scripts share: progress on stderr, the machine they ran on, the JSON
report, and sizes written like fio's."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def log(message: str) -> None:
    """One line of progress on stderr (stdout carries the JSON)."""
    print(message, file=sys.stderr, flush=True)


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model"):
                return value.strip()
    return None


def filesystem_of(path: Path) -> dict[str, str | None]:
    """The mount ``path`` lives on: its type (``ext4``), device and mount point.

    The longest mount point of ``/proc/self/mounts`` that is a prefix of ``path``'s real path;
    every value is None when ``path`` does not exist or the table cannot be read.
    """
    found: dict[str, str | None] = {"type": None, "device": None, "mount_point": None}
    try:
        real = os.path.realpath(path, strict=True)
        table = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    best = -1
    for line in table:
        device, point, kind, *_ = line.split()
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best = len(point)
            found = {"type": kind, "device": device, "mount_point": point}
    return found


def machine(directory: Path | None = None) -> dict[str, Any]:
    """What a report needs to say about the machine it was measured on.

    Kernel, CPU count and model, memory, Python, the 1-minute load average now, and, when
    ``directory`` is given, the filesystem the benchmark's files go to.
    """
    details: dict[str, Any] = {
        "kernel": platform.release(),
        "platform": platform.platform(),
        "architecture": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if directory is not None:
        details["filesystem"] = filesystem_of(directory)
    return details


def write_report(figures: dict[str, Any], path: Path | None) -> None:
    """The benchmark's JSON object: on stdout, and in ``path`` too when given (``--json``)."""
    text = json.dumps(figures, indent=2)
    if path is not None:
        path.write_text(text + "\n")
    sys.stdout.write(text + "\n")


#: The longest path a Unix socket may have (sun_path holds 108 bytes, the last one NUL).
_SUN_PATH = 107


def daemon_socket(work: Path) -> Path:
    """Where a benchmark's daemon listens: ``work/daemon.sock``, or, when that path is too long
    for a Unix socket (a deep ``--dir``), the same name in a directory under /tmp named after
    ``work`` (the same for every call), removed when the benchmark exits."""
    path = work / "daemon.sock"
    if len(os.fsencode(path)) <= _SUN_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(work.resolve())).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"aioduet-sock-{digest}"
    if not short.is_dir():
        short.mkdir(mode=0o700)
        atexit.register(shutil.rmtree, short, ignore_errors=True)
    return short / "daemon.sock"


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
