"""Residency of a tree of small files: ``aioduet scan -R`` against vmtouch and fincore.

Builds a fresh tree of ``--files`` files of 1-16 KiB (1,000 per directory; ext4 creates files
slowly where many were just deleted, so every run makes a new directory), or reuses
``--dir``, then times in the same run, interleaved, each command over the whole tree:

* ``aioduet``: ``python -m aioduet scan -R --json TREE > /dev/null``;
* ``vmtouch``: ``vmtouch TREE`` (summary mode: mincore over every file);
* ``fincore``: ``fincore -R -b -J TREE`` where util-linux has ``-R`` (2.41 and later),
  else ``find TREE -type f -print0 | xargs -0 fincore -b -J`` (what a user of an older
  util-linux does; ``fincore_mode`` in the JSON says which).

Two states of the cache: ``warm`` (every file read just before each command) and
``evicted`` (every file dropped with ``POSIX_FADV_DONTNEED`` just before). Times are wall
seconds of the whole command, Python's start-up included; the median of ``--repeat`` runs
is kept. Ratios are aioduet's median over the peer's: below 1 aioduet is faster. Not a
timed test: it prints one JSON object and never fails on a slow machine.

``startup_seconds`` says how much of aioduet's time is start-up: ``python -c pass`` and
``python -m aioduet scan --help`` (median of ``--repeat`` runs each). The load average is
taken before and after: the machine may be shared, and its figures vary with the load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import machine

ROOT = Path(__file__).resolve().parent.parent
PER_DIRECTORY = 1000
STATES = ("warm", "evicted")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_tree(root: Path, files: int, seed: int) -> list[str]:
    """``files`` files of 1-16 KiB, ``PER_DIRECTORY`` to a directory; returns their paths."""
    rng = random.Random(seed)
    data = os.urandom(16 << 10)
    paths = []
    for number in range(files):
        directory = root / f"d{number // PER_DIRECTORY:04}"
        if number % PER_DIRECTORY == 0:
            directory.mkdir()
        path = str(directory / f"f{number % PER_DIRECTORY:04}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data[: rng.randint(1, 16) << 10])
        finally:
            os.close(fd)
        paths.append(path)
    return paths


def list_tree(root: Path) -> list[str]:
    return [os.path.join(d, name) for d, _, names in os.walk(root) for name in names]


def warm(paths: Sequence[str]) -> None:
    """Read every file whole."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            while os.read(fd, 1 << 16):
                pass
        finally:
            os.close(fd)


def evict(paths: Sequence[str]) -> None:
    """Drop every file's clean pages (the tree is synced once after it is made)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def fincore_has_recursive() -> bool:
    text = subprocess.run(["fincore", "--help"], capture_output=True, text=True, check=False)
    return "--recursive" in text.stdout


def commands(root: Path) -> dict[str, list[str]]:
    """The command line of each tool that is installed."""
    found = {"aioduet": [sys.executable, "-m", "aioduet", "scan", "-R", "--json", str(root)]}
    if shutil.which("vmtouch"):
        found["vmtouch"] = ["vmtouch", str(root)]
    if shutil.which("fincore"):
        if fincore_has_recursive():
            found["fincore"] = ["fincore", "-R", "-b", "-J", str(root)]
        else:
            pipeline = f"find '{root}' -type f -print0 | xargs -0 fincore -b -J"
            found["fincore"] = ["sh", "-c", pipeline]
    return found


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def version(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    lines = (result.stdout + result.stderr).strip().splitlines()
    named = [line.strip() for line in lines if " v" in line or "version" in line.lower()]
    chosen = named or lines
    return chosen[0] if chosen else None


def startup(repeat: int) -> dict[str, float]:
    """Median wall seconds of a bare Python and of ``aioduet scan --help``."""
    commands = {
        "python": [sys.executable, "-c", "pass"],
        "aioduet_scan_help": [sys.executable, "-m", "aioduet", "scan", "--help"],
    }
    return {
        name: round(statistics.median(timed(command) for _ in range(repeat)), 3)
        for name, command in commands.items()
    }


def measure(
    tools: dict[str, list[str]], paths: Sequence[str], repeat: int
) -> dict[str, dict[str, Any]]:
    prepare: dict[str, Callable[[Sequence[str]], None]] = {"warm": warm, "evicted": evict}
    samples: dict[tuple[str, str], list[float]] = {}
    for number in range(repeat):
        for state in STATES:
            progress(f"repetition {number + 1}/{repeat}: {state}")
            for name, command in tools.items():
                prepare[state](paths)  # right before each command: DAMON evicts idle pages
                samples.setdefault((state, name), []).append(timed(command))
    results: dict[str, dict[str, Any]] = {}
    for state in STATES:
        medians = {name: statistics.median(samples[state, name]) for name in tools}
        result: dict[str, Any] = {"aioduet_seconds": round(medians["aioduet"], 3)}
        for peer in ("vmtouch", "fincore"):
            result[f"{peer}_seconds"] = round(medians[peer], 3) if peer in medians else None
            result[f"ratio_vs_{peer}"] = (
                round(medians["aioduet"] / medians[peer], 3) if peer in medians else None
            )
        result["all_seconds"] = {
            name: [round(s, 3) for s in samples[state, name]] for name in tools
        }
        results[state] = result
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time aioduet scan -R against vmtouch and fincore over a tree of files.",
    )
    parser.add_argument("--files", type=int, default=100_000, help="files (default 100k)")
    parser.add_argument("--dir", type=Path, help="reuse this tree instead of making one")
    parser.add_argument(
        "--base", type=Path, default=Path("/tmp"), help="where to make the tree (default /tmp)"
    )
    parser.add_argument("--keep", action="store_true", help="do not delete the tree made")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and state")
    parser.add_argument("--seed", type=int, default=0, help="seed of the file sizes")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.files < 1 or args.repeat < 1:
        parser.error("need --files >= 1 and --repeat >= 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    made = args.dir is None
    root = args.dir or Path(tempfile.mkdtemp(prefix="aioduet-scan-tree-", dir=args.base))
    try:
        if made:
            progress(f"making {args.files} files under {root}")
            create = time.perf_counter()
            paths = make_tree(root, args.files, args.seed)
            os.sync()
            created = round(time.perf_counter() - create, 1)
        else:
            paths, created = list_tree(root), None
        tools = commands(root)
        results = measure(tools, paths, args.repeat)
        started_up = startup(args.repeat)
    finally:
        if made and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "scan_tree",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        # A tree made here is removed by now: describe its base's filesystem instead.
        "machine": {
            **machine(args.dir or args.base),
            "load_average_1min_before": round(load_before, 2),
        },
        "parameters": {
            "files": len(paths),
            "repeat": args.repeat,
            "seed": args.seed,
            "tree": str(root),
            "made": made,
            "create_seconds": created,
        },
        "tools": {
            "vmtouch": version(["vmtouch", "-h"]) if "vmtouch" in tools else None,
            "fincore": version(["fincore", "--version"]) if "fincore" in tools else None,
            "fincore_mode": None
            if "fincore" not in tools
            else ("-R" if tools["fincore"][0] == "fincore" else "find|xargs"),
            "commands": {name: " ".join(command) for name, command in tools.items()},
        },
        "results": results,
        "startup_seconds": started_up,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    text = json.dumps(run(args), indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
