"""Idle CPU of the framework watching a large tree, and how soon it notices an eviction.

A fresh tree of ``--files`` small files in ``--dirs`` directories is written, flushed and
evicted (nothing cached: idle). An embedded framework (``--sources``, default the
unprivileged set) registers one EXISTS task on it; once the registration scan is done, the
process's CPU time (all threads) is sampled over ``--seconds`` of idleness and reported as a
percentage of one core (goal: under 1%).

Then ``--hot`` files are read (each becomes hot: its ADDED items arrive) and evicted by
another process with fadvise, which no notification reports: the time from the eviction to
the REMOVED item is measured for each and compared with the bound the residency source
promises at this budget (see ``aioduet/sources/residency.py``). The walk's bound, for
changes that nothing hints and that happen in files not known to be cached, is reported
from the duration of the last complete walk (``status()``'s ``cycle_seconds``) and from the
formula.

Not a timed test: it prints one JSON object and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _common import machine

import aioduet
from aioduet import Event, _kernel
from aioduet.sources import DEFAULT_BUDGET

_EVICT = """
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
"""


def build_tree(root: Path, files: int, dirs: int) -> list[Path]:
    """Write the tree, flush it and evict it; returns the file paths."""
    paths: list[Path] = []
    per_dir = math.ceil(files / dirs)
    for d in range(dirs):
        sub = root / f"d{d:04}"
        sub.mkdir(parents=True)
        for f in range(min(per_dir, files - len(paths))):
            path = sub / f"f{f:05}"
            path.write_bytes(b"x" * 100)
            paths.append(path)
    os.sync()
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            _kernel.evict(fd)
        finally:
            os.close(fd)
    return paths


def _read(paths: list[Path]) -> dict[aioduet.Uuid, Path]:
    """Read the first page of each file; returns them by uuid."""
    uuids = {}
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.read(fd, 4096)
            uuids[aioduet.Uuid.from_stat(os.fstat(fd), _kernel.inode_generation(fd))] = path
        finally:
            os.close(fd)
    return uuids


async def measure(args: argparse.Namespace, root: Path, paths: list[Path]) -> dict[str, Any]:
    added: dict[aioduet.Uuid, float] = {}
    removed: dict[aioduet.Uuid, float] = {}
    arrived = anyio.Event()
    async with aioduet.open_duet(
        sources=args.sources, interval=args.interval, budget=args.budget
    ) as duet:
        task = await duet.register("idle", Event.EXISTS, root)
        started = time.monotonic()
        await task.wait_scanned()
        scan_seconds = time.monotonic() - started

        async def consume() -> None:
            async for item in task:
                now = time.monotonic()
                if item.state & Event.ADDED:
                    added.setdefault(item.uuid, now)
                if item.state & Event.REMOVED:
                    removed.setdefault(item.uuid, now)
                arrived.set()

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await anyio.sleep(args.interval * 2)  # past the first rounds after the scan
            cpu0, wall0 = time.process_time(), time.monotonic()
            await anyio.sleep(args.seconds)
            cpu = time.process_time() - cpu0
            wall = time.monotonic() - wall0

            hot = random.Random(1).sample(paths, min(args.hot, len(paths)))
            read_at = time.monotonic()
            uuids = _read(hot)
            with anyio.fail_after(60):
                while not all(u in added for u in uuids):
                    await arrived.wait()
                    arrived = anyio.Event()
            added_latency = max(added[u] for u in uuids) - read_at
            removed.clear()
            evicted_at = time.monotonic()
            await anyio.run_process([sys.executable, "-c", _EVICT, *map(str, hot)])
            with anyio.fail_after(600):
                while not all(u in removed for u in uuids):
                    await arrived.wait()
                    arrived = anyio.Event()
            latencies = [removed[u] - evicted_at for u in uuids]
            status = await duet.status()
            group.cancel_scope.cancel()
    residency = next(s for s in status.sources if s.name == "residency")
    hot_files = len(uuids)
    dirs = args.dirs + 1
    return {
        "registration_scan_seconds": round(scan_seconds, 3),
        "idle": {
            "seconds": round(wall, 3),
            "cpu_seconds": round(cpu, 4),
            "cpu_percent_of_one_core": round(100 * cpu / wall, 3),
            "goal_percent": 1.0,
        },
        "eviction": {
            "hot_files": hot_files,
            "max_seconds": round(max(latencies), 3),
            "median_seconds": round(statistics.median(latencies), 3),
            "bound_seconds": round(
                (math.ceil(5 * hot_files / (0.75 * args.budget)) + 1) * args.interval, 3
            ),
            "read_to_added_seconds": round(added_latency, 3),
        },
        "walk": {
            "last_cycle_seconds": residency.cycle_seconds if residency.passes > 1 else None,
            # Nothing hot: the walk gets the whole budget. Guaranteed: a quarter of it.
            "expected_seconds": round(
                (math.ceil((3 * args.files + 2 * dirs) / args.budget) + 1) * args.interval, 3
            ),
            "bound_seconds": round(
                (math.ceil((3 * args.files + 5 * hot_files + 2 * dirs) / (0.25 * args.budget)) + 1)
                * args.interval,
                3,
            ),
            "passes": residency.passes,
            "budget_used": round(residency.budget_used, 3),
        },
        "sources": [s.name for s in status.sources],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the tree")
    parser.add_argument("--dirs", type=int, default=1000, help="directories they are spread over")
    parser.add_argument("--seconds", type=float, default=30.0, help="idle time measured")
    parser.add_argument("--hot", type=int, default=20, help="files read, then evicted")
    parser.add_argument("--interval", type=float, default=1.0, help="residency interval (s)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="calls per interval")
    parser.add_argument(
        "--sources", default="scan", help="a source set (scan, auto) or names, comma-separated"
    )
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where to build the tree")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aioduet-idle-", dir=args.dir) as tmp:
        root = Path(tmp)
        built = time.monotonic()
        paths = build_tree(root / "tree", args.files, args.dirs)
        build_seconds = time.monotonic() - built
        result = anyio.run(measure, args, root / "tree", paths)
    report = {
        "benchmark": "idle_cpu",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.dir),
        "parameters": {
            "files": args.files,
            "dirs": args.dirs,
            "seconds": args.seconds,
            "interval": args.interval,
            "budget": args.budget,
            "sources": args.sources,
        },
        "build_seconds": round(build_seconds, 2),
        **result,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
