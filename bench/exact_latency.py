"""Latency from a page entering the cache to the task's ``async for``, with the exact set.

A file of ``--pages`` pages is written, flushed and evicted under a fresh directory; an
embedded framework (``--sources``, default ``exact``: the kernel tracepoints, root) registers
an ``ADDED`` task on it. A worker thread then reads the file one page at a time (random-access
advice, so no readahead), ``--gap`` seconds apart, noting when each read started (the add event
fires during the read, before its I/O completes); the task notes when each page's item
arrived. The latency of a page is the difference. Reported: p50,
p90, p99 and the maximum, in milliseconds (goal: p99 <= 10 ms), and how many pages were seen.

Not a timed test: it prints one JSON object and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from _common import machine

import aioduet
from aioduet import Event, _kernel

PAGE = _kernel.PAGE_SIZE


def _reader(path: Path, pages: int, gap: float, returned: dict[int, float]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in range(pages):
            # The page enters the cache during the read (its add event fires before the I/O
            # completes), so the clock starts just before it.
            returned[page] = time.perf_counter()
            os.pread(fd, 1, page * PAGE)
            time.sleep(gap)
    finally:
        os.close(fd)


async def measure(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    arrived: dict[int, float] = {}
    returned: dict[int, float] = {}
    sources = args.sources if args.sources in ("auto", "scan", "exact") else args.sources.split(",")
    async with aioduet.open_duet(sources) as duet:
        task = await duet.register("latency", Event.ADDED, path.parent)
        await task.wait_scanned()
        complete = anyio.Event()

        async def consume() -> None:
            async for item in task:
                now = time.perf_counter()
                for page in item.pages:
                    arrived.setdefault(page, now)
                if len(arrived) >= args.pages:
                    complete.set()

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await anyio.to_thread.run_sync(_reader, path, args.pages, args.gap, returned)
            with anyio.move_on_after(5):  # pages evicted meanwhile (DAMON) never arrive
                await complete.wait()
            group.cancel_scope.cancel()
        names = [s.name for s in (await duet.status()).sources]
    latencies = sorted(
        (arrived[page] - returned[page]) * 1000 for page in returned if page in arrived
    )
    if not latencies:
        raise SystemExit("no page was reported: is the exact set usable here (aioduet doctor)?")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "sources": names,
        "pages_read": len(returned),
        "pages_reported": len(latencies),
        "latency_ms": {
            "p50": round(cuts[49], 3),
            "p90": round(cuts[89], 3),
            "p99": round(cuts[98], 3),
            "max": round(latencies[-1], 3),
            "goal_p99": 10.0,
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=2000, help="pages read, one at a time")
    parser.add_argument("--gap", type=float, default=0.002, help="seconds between two reads")
    parser.add_argument("--sources", default="exact", help="a source set or names, comma-separated")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where to make the file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aioduet-latency-", dir=args.dir) as tmp:
        path = Path(tmp) / "data"
        with path.open("wb") as f:
            f.write(os.urandom(args.pages * PAGE))
            f.flush()
            os.fsync(f.fileno())
            _kernel.evict(f.fileno())
        result = anyio.run(measure, args, path)
    report = {
        "benchmark": "exact_latency",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.dir),
        "parameters": {"pages": args.pages, "gap": args.gap, "sources": args.sources},
        **result,
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
