"""Soak: the flood generator for minutes on end; resources stay flat and the views stay true.

For each source set (``--sets``, default ``scan,exact``), in a fresh directory under ``--dir``
(ext4 expected) holding ``--files`` files in 8 subdirectories:

1. a framework opens (``interval`` 0.1 s, ``--trace-buffer-kb`` per CPU for the tracepoints,
   small by default so that the exact set keeps losing events and recovering) and ``--tasks``
   (8) state-based tasks register for ``EXISTS | MODIFIED`` on the directory, each applying its
   items to an :class:`aioduet.views.ResidencyView`;
2. for ``--minutes``, ``--workers`` processes run ``bench/flood.py``'s generator in rounds:
   ``--burst`` seconds of flood (reads, writes, fsyncs, truncations, renames, deletions,
   creations, evictions), then ``--pause`` seconds of quiet in which the kernel's own
   writeback and reclaim act on the tree too. One process pool serves every round, so the
   benchmark process holds the same pipes and pool threads throughout;
3. every ``--sample`` seconds, in the benchmark process (where the framework runs): the
   resident set (``/proc/self/statm``), open fds (``/proc/self/fd``), threads (Python's, also
   split into anyio's worker pool and the others, and the kernel's ``Threads`` of
   ``/proc/self/status``), the
   store's size from ``duet.status()`` (file entries, pending files and pages, estimated
   bytes), the pages pending in all tasks, the files the views know and
   ``sys.getallocatedblocks()`` (Python objects alive, blind to allocator fragmentation);
4. then the flood stops, the views are given ``--settle`` seconds to agree with the kernel,
   page for page (``flood.mismatches``: cached and dirty pages of every file in the tree, no
   pages left for files that are gone), and are compared again after a ``sync``; a task
   registered at the end shows whether a disagreement is in the sources' maps or in the
   items the older tasks were sent.

The first ``--warmup`` fraction of the time (20%) is warm-up: caches, the store and the
allocator grow to their working size. Over the samples after it, each series gets a
least-squares slope per minute, the rise that slope gives over the measured window, its
first, last, minimum and maximum, and two floors: the minimum over the first and over the
last quarter of the measured samples. Floors, not single samples, because the counts move
with the flood (a residency check holds a file open for a moment; pages wait for a fetch)
while a leak raises even the lowest value.

A series is ``flat`` when:

- ``rss_mib``: the slope is under 1 MiB per minute;
- ``fds``, ``threads``, ``os_threads``, ``other_threads``: the last quarter's floor is no
  higher than the first quarter's, and the fitted rise over the window is under one (less
  than one fd or thread gained over the whole window);
- ``pool_threads``, the workers of ``anyio.to_thread`` (the residency checks run there): the
  pool never exceeds anyio's default limiter, 40. anyio keeps an idle worker until the next
  call finds it idle for 10 s, so the pool is the high-water mark of concurrent calls and
  may step up late in a short run; ``other_threads`` are all the rest;
- the store's and the views' counts (``store_*``, ``task_pending_pages``, ``view_files``) and
  ``allocated_blocks``: the last quarter's floor is no higher than the first quarter's plus
  5% of the first quarter's maximum (these sizes follow the tree, which the flood keeps
  between ``--files`` and twice that).

The JSON gives, per set: the flood (rounds, operations, operations per second of flood), the
sources' observations, losses and OVERFLOWs, the samples themselves (columns, with the
seconds since the flood began), the summary of every series with its ``flat``, ``all_flat``,
the mismatches at the end (the goal is 0, with examples), after ``sync``, and of the task
registered last, and the fds and threads before the framework opened and after it closed.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
import gc
import multiprocessing
import multiprocessing.pool
import multiprocessing.resource_tracker
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import log, machine, write_report
from flood import _paths, _settle, checks_after_sync, flood, loss_report, populate

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
RSS_SLOPE_MIB = 1.0  # the flat bound of the resident set, MiB per minute
SIZE_SLACK = 0.05  # the flat bound of sizes that follow the tree, as a fraction of their max
COUNTS = ("fds", "threads", "os_threads", "other_threads")
POOL_THREAD = "AnyIO worker thread"  # anyio.to_thread's workers, named so by anyio
POOL_LIMIT = 40  # anyio's default thread limiter: the most workers its pool starts


# -- samples ---------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE  # fields: size resident shared ...


def _os_threads() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/status has no Threads line")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # the listing's own fd


def resources() -> dict[str, int]:
    """The process's open fds and threads (all, anyio's worker pool, the others), now."""
    threads = threading.enumerate()
    pool = sum(1 for thread in threads if thread.name == POOL_THREAD)
    return {
        "fds": _fds(),
        "threads": len(threads),
        "os_threads": _os_threads(),
        "pool_threads": pool,
        "other_threads": len(threads) - pool,
    }


def _census() -> dict[str, Any]:
    """Open fds by kind and Python threads by name: what is left when the counts differ."""
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own fd, closed by now
            continue
        kinds[target.split(":", 1)[0] if ":" in target else target] += 1
    names = collections.Counter(t.name.rstrip("0123456789-_ ") for t in threading.enumerate())
    return {**resources(), "fd_kinds": dict(kinds), "thread_names": dict(names)}


async def _sample(duet: Any, views: list[Any], root: Path) -> dict[str, float]:
    status = await duet.status()
    return {
        "rss_mib": round(_rss_bytes() / MIB, 2),
        **resources(),
        "tree_files": len(_paths(root)),
        "store_files": status.store.files,
        "store_pending_files": status.store.pending_files,
        "store_pending_pages": status.store.pending_pages,
        "store_memory_bytes": status.store.memory_bytes,
        "task_pending_pages": sum(t.statistics.pending_pages for t in status.tasks),
        "view_files": sum(len(view.files) for view in views),
        "allocated_blocks": sys.getallocatedblocks(),
    }


async def _sample_every(
    into: dict[str, list[float]],
    started: float,
    *,
    seconds: float,
    duet: Any,
    views: list[Any],
    root: Path,
) -> None:
    import anyio  # noqa: PLC0415 - the flood workers import this module and need no anyio

    while True:
        sample = await _sample(duet, views, root)
        into.setdefault("seconds", []).append(round(anyio.current_time() - started, 2))
        for name, value in sample.items():
            into.setdefault(name, []).append(value)
        await anyio.sleep(seconds)


# -- summaries -------------------------------------------------------------------------------


def slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ``ys`` against ``xs`` (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def _flat(
    name: str, per_minute: float, rise: float, floors: tuple[float, float], tops: list[float]
) -> bool:
    start, end = floors
    if name == "pool_threads":  # a high-water mark of concurrent calls, bounded by the limiter
        return max(tops) <= POOL_LIMIT
    top = tops[0]
    if name == "rss_mib":
        return per_minute < RSS_SLOPE_MIB
    if name in COUNTS:
        return end <= start and rise < 1
    return end <= start + SIZE_SLACK * top


def summarize(samples: dict[str, list[float]], warmup: float) -> dict[str, dict[str, Any]]:
    """Per series, over the samples at ``warmup`` seconds or later: the slope per minute, the
    rise it gives over the window, first, last, min, max, the floors of the first and last
    quarters, and whether the series is flat (see the module docstring)."""
    seconds = samples.get("seconds", [])
    kept = [i for i, t in enumerate(seconds) if t >= warmup]
    if len(kept) < 4:
        raise ValueError(f"{len(kept)} samples after the warm-up: too few to fit (use --sample)")
    minutes = [seconds[i] / 60 for i in kept]
    window = minutes[-1] - minutes[0]
    quarter = max(1, len(kept) // 4)
    summary = {}
    for name, values in samples.items():
        if name == "seconds":
            continue
        ys = [values[i] for i in kept]
        per_minute = slope(minutes, ys)
        floors = (min(ys[:quarter]), min(ys[-quarter:]))
        tops = [max(ys[:quarter]), max(ys)]
        summary[name] = {
            "slope_per_minute": round(per_minute, 4),
            "rise_over_window": round(per_minute * window, 3),
            "first": ys[0],
            "last": ys[-1],
            "min": min(ys),
            "max": max(ys),
            "start_floor": floors[0],
            "end_floor": floors[1],
            "flat": _flat(name, per_minute, per_minute * window, floors, tops),
        }
    return summary


# -- one source set --------------------------------------------------------------------------


async def _wait(jobs: list[multiprocessing.pool.AsyncResult[dict[str, int]]]) -> None:
    import anyio  # noqa: PLC0415

    # Polled: waiting in a thread would make a thread come and go with every round.
    while not all(job.ready() for job in jobs):  # noqa: ASYNC110 - pool results have no event
        await anyio.sleep(0.05)


async def flood_rounds(
    pool: multiprocessing.pool.Pool, args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    """Rounds of ``--burst`` seconds of flood and ``--pause`` seconds of quiet until
    ``--minutes`` have passed; what was done."""
    import anyio  # noqa: PLC0415

    ops: dict[str, int] = {}
    deadline = anyio.current_time() + args.minutes * 60
    rounds = 0
    flooding = 0.0
    while (left := deadline - anyio.current_time()) > 0.5:
        burst = min(args.burst, left)
        seed = args.seed + rounds * args.workers
        jobs = [
            pool.apply_async(flood, (str(root), burst, seed + w, args.files))
            for w in range(args.workers)
        ]
        began = anyio.current_time()
        await _wait(jobs)
        flooding += anyio.current_time() - began
        for job in jobs:
            for op, n in job.get().items():
                ops[op] = ops.get(op, 0) + n
        rounds += 1
        await anyio.sleep(max(0.0, min(args.pause, deadline - anyio.current_time())))
    total = sum(ops.values())
    return {
        "rounds": rounds,
        "flood_seconds": round(flooding, 1),
        "operations": ops,
        "operations_total": total,
        "operations_per_second": round(total / flooding, 1) if flooding else 0.0,
    }


async def _consume(task: Any, view: Any, counts: dict[str, int]) -> None:
    """Apply the task's items to its view. A file left with no cached page is dropped from
    the view (the comparison reads a missing file as empty): the view, and so the benchmark's
    own memory, then follows the tree instead of growing with every file the flood made."""
    from aioduet import Event  # noqa: PLC0415

    files = view.files
    async for item in task:
        if item.state == Event.OVERFLOW:
            counts["overflows"] += 1
        state = view.apply(item)
        if state is not None and not state.cached and not state.dirty:
            del files[state.uuid.dev, state.uuid.ino]


async def _flood_for_the_time(
    args: argparse.Namespace, root: Path, sample: Callable[[float], Any]
) -> dict[str, Any]:
    """The rounds of flood, with the sampler running beside them."""
    import anyio  # noqa: PLC0415

    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        async with anyio.create_task_group() as sampling:
            sampling.start_soon(sample, anyio.current_time())
            flooded = await flood_rounds(pool, args, root)
            sampling.cancel_scope.cancel()
    return flooded


def _small_ring_buffers(kb: int) -> Callable[[], None]:
    """Make the framework's sources use ``kb`` KiB ring buffers; returns the undo."""
    import aioduet._framework  # noqa: PLC0415
    from aioduet.sources import SourceOptions  # noqa: PLC0415

    module: Any = aioduet._framework  # open_duet has no option for it: its factory, replaced
    module.SourceOptions = functools.partial(SourceOptions, trace_buffer_kb=kb)

    def undo() -> None:
        module.SourceOptions = SourceOptions

    return undo


def _tree(root: Path, args: argparse.Namespace) -> None:
    root.mkdir()
    populate(root, args.files, args.seed)


async def soak_set(args: argparse.Namespace, sources: str, root: Path) -> dict[str, Any]:
    """Soak one source set in a fresh tree at ``root``; its part of the report."""
    import anyio  # noqa: PLC0415
    import anyio.to_thread  # noqa: PLC0415

    import aioduet  # noqa: PLC0415
    from aioduet import Event  # noqa: PLC0415
    from aioduet.views import ResidencyView  # noqa: PLC0415

    _tree(root, args)
    views = [ResidencyView() for _ in range(args.tasks)]
    counts = [{"overflows": 0} for _ in range(args.tasks)]
    samples: dict[str, list[float]] = {}
    gc.collect()
    before_open = _census()
    undo = _small_ring_buffers(args.trace_buffer_kb)
    try:
        async with (
            aioduet.open_duet(sources, interval=0.1, max_tasks=args.tasks + 1) as duet,
            anyio.create_task_group() as tg,
        ):
            for view, count in zip(views, counts, strict=True):
                task = await duet.register("soak", Event.EXISTS | Event.MODIFIED, root)
                tg.start_soon(_consume, task, view, count)
                await task.wait_scanned()
            before = await duet.status()
            log(f"{sources}: {args.minutes:g} min of flood rounds, {args.tasks} tasks")
            sampler = functools.partial(
                _sample_every, samples, seconds=args.sample, duet=duet, views=views, root=root
            )
            flooded = await _flood_for_the_time(args, root, sampler)
            log(f"{sources}: {flooded['operations_total']} operations; settling")
            wrong, settled = await _settle(views, root, args.settle)
            at_end = await _sample(duet, views, root)
            checks = await checks_after_sync(duet, tg, views, root, args.settle, consume=_consume)
            after = await duet.status()
            tg.cancel_scope.cancel()
    finally:
        undo()
    gc.collect()  # the pool's pipes close when it is collected
    after_close = _census()
    log(f"{sources}: {len(wrong)} mismatches, {checks['mismatches_after_sync']} after sync")
    losses = loss_report(before, after, counts)
    series = summarize(samples, args.warmup * args.minutes * 60)
    return {
        "flood": flooded,
        **losses,
        "files_at_end": len(_paths(root)),
        "warmup_seconds": round(args.warmup * args.minutes * 60, 1),
        "series": series,
        "all_flat": all(s["flat"] for s in series.values()),
        "samples": samples,
        "at_end": at_end,
        "before_open": before_open,
        "after_close": after_close,
        "settle_seconds": settled,
        "mismatches": len(wrong),
        "mismatch_examples": wrong[:5],
        **checks,
    }


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    return {sources: await soak_set(args, sources, workdir / sources) for sources in args.sets}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sets", type=lambda s: s.split(","), default=["scan", "exact"])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of flood rounds")
    parser.add_argument("--files", type=int, default=200, help="files in the tree at the start")
    parser.add_argument("--workers", type=int, default=2, help="flooding processes")
    parser.add_argument("--tasks", type=int, default=8, help="state-based tasks watching")
    parser.add_argument("--burst", type=float, default=10.0, help="seconds of flood per round")
    parser.add_argument("--pause", type=float, default=10.0, help="seconds of quiet per round")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument(
        "--warmup", type=float, default=0.2, help="fraction of the time left out of the fits"
    )
    parser.add_argument(
        "--settle", type=float, default=60.0, help="seconds the views may take to agree"
    )
    parser.add_argument("--trace-buffer-kb", type=int, default=8, help="tracepoint ring buffers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the trees go")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if min(args.files, args.workers, args.tasks) < 1 or args.tasks > 63:
        parser.error("--files and --workers must be at least 1, --tasks between 1 and 63")
    if min(args.minutes, args.burst, args.sample) <= 0 or args.pause < 0:
        parser.error("--minutes, --burst and --sample must be positive, --pause not negative")
    if not 0 <= args.warmup < 1:
        parser.error("--warmup is a fraction of the time, from 0 up to 1")
    import anyio  # noqa: PLC0415

    started = time.monotonic()
    # Started once per process by the first pool and never stopped: start it before any
    # count is taken, so that its pipe is not counted as left open by a source set.
    multiprocessing.resource_tracker.ensure_running()
    workdir = Path(tempfile.mkdtemp(prefix="aioduet-soak-", dir=args.dir))
    try:
        results = anyio.run(measure, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "soak",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.dir),
        "parameters": {k: v for k, v in vars(args).items() if k not in ("json", "dir")},
        "sets": results,
        "all_flat": all(r["all_flat"] for r in results.values()),
        "mismatches": sum(r["mismatches"] + r["mismatches_after_sync"] for r in results.values()),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
