"""Convergence under floods: after a storm of file operations, every task's view is the truth.

For each source set (``--sets``, default ``scan,exact``), in a fresh directory under ``--dir``
(ext4 expected) holding ``--files`` files in 8 subdirectories:

1. a framework opens (``interval`` 0.1 s) and ``--tasks`` state-based tasks register for
   ``EXISTS | MODIFIED`` on the directory; each applies its items to a
   :class:`aioduet.views.ResidencyView` as they come, counting ``OVERFLOW`` items;
2. ``--workers`` processes flood the tree for ``--seconds``: whole and partial reads (some with
   readahead off), writes with and without fsync, truncations (shrinking and growing),
   renames, deletions, re-creations and evictions (``POSIX_FADV_DONTNEED``), as fast as they
   can. With ``--trace-buffer-kb`` small (default 8) the tracepoints' ring buffers overflow
   too, so the exact set must recover from lost events;
3. then, bounded by ``--settle`` seconds, the views are compared with the kernel's answer until
   they agree: for every file in the tree, each view's cached pages and dirty pages must equal
   ``mincore``'s and the page-cache dirty map's, page for page; a file no longer in the tree
   must have no cached page left in any view. After a ``sync`` the comparison is made again
   (every dirty page must then have been reported FLUSHED).

The JSON gives per set: operations and operations per second, the sources' observations per
second, events lost by the sources, OVERFLOW items per task, and the mismatches left (the goal
is 0), with examples of the first few. Lost observations must each have reached every task as
an OVERFLOW: ``unsignalled_loss`` says when a source lost events and some task got none.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import multiprocessing
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import log, machine, write_report

SUBDIRS = 8
PAGE = os.sysconf("SC_PAGE_SIZE")
MAX_PAGES = 64


def _paths(root: Path) -> list[Path]:
    found: list[Path] = []
    for sub in range(SUBDIRS):
        with os.scandir(root / f"d{sub}") as entries:
            found.extend(Path(e.path) for e in entries if e.is_file(follow_symlinks=False))
    return found


def _write(path: Path, first: int, pages: int, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, os.urandom(pages * PAGE), first * PAGE)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path, rng: random.Random) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if rng.random() < 0.5:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        pages = max(1, -(-size // PAGE))
        first = rng.randrange(pages)
        os.pread(fd, rng.randint(1, pages - first) * PAGE, first * PAGE)
    finally:
        os.close(fd)


def _advise(path: Path, advice: int) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, advice)
    finally:
        os.close(fd)


def _one(root: Path, rng: random.Random, name: str) -> str:
    """One random operation; returns its name."""
    paths = _paths(root)
    path = rng.choice(paths) if paths else root / "d0" / f"{name}-0"
    op = rng.choices(
        ["read", "write", "write+fsync", "truncate", "rename", "delete", "create", "evict"],
        weights=[30, 20, 5, 8, 8, 6, 8, 15],
    )[0]
    if op == "read":
        _read(path, rng)
    elif op in ("write", "write+fsync"):
        _write(path, rng.randrange(MAX_PAGES), rng.randint(1, 8), op == "write+fsync")
    elif op == "truncate":
        os.truncate(path, rng.randrange(MAX_PAGES * PAGE))
    elif op == "rename":
        os.rename(path, root / f"d{rng.randrange(SUBDIRS)}" / f"{name}-{rng.randrange(10**9)}")
    elif op == "delete":
        path.unlink()
    elif op == "create":
        target = root / f"d{rng.randrange(SUBDIRS)}" / f"{name}-{rng.randrange(10**9)}"
        _write(target, 0, rng.randint(1, MAX_PAGES), False)
    else:
        _advise(path, os.POSIX_FADV_DONTNEED)
    return op


def flood(root: str, seconds: float, seed: int, files: int) -> dict[str, int]:
    """Run random operations on the tree for ``seconds``; the count of each kind done."""
    rng = random.Random(seed)
    done: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    name = f"w{seed}"
    while time.monotonic() < deadline:
        try:
            op = _one(Path(root), rng, name)
        except (FileNotFoundError, IsADirectoryError):  # another worker got there first
            op = "raced"
        done[op] = done.get(op, 0) + 1
        if sum(done.values()) % 100 == 0:  # creations may outpace deletions: even up
            paths = _paths(Path(root))
            for extra in rng.sample(paths, max(0, len(paths) - 2 * files)):
                extra.unlink(missing_ok=True)
    return done


def populate(root: Path, files: int, seed: int) -> None:
    rng = random.Random(seed)
    for sub in range(SUBDIRS):
        (root / f"d{sub}").mkdir()
    for i in range(files):
        _write(root / f"d{i % SUBDIRS}" / f"f{i}", 0, rng.randint(1, MAX_PAGES), False)
    os.sync()


# -- the oracle ----------------------------------------------------------------------------


def _pages(runs: list[tuple[int, int]]) -> set[int]:
    return {first + k for first, count in runs for k in range(count)}


def truth(root: Path) -> dict[tuple[int, int], tuple[str, set[int], set[int]]]:
    """(dev, ino) -> (path, cached pages, dirty pages), from the kernel, for the whole tree."""
    from aioduet import _kernel  # noqa: PLC0415 - the flood workers need none of aioduet

    found = {}
    for path in _paths(root):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            st = os.fstat(fd)
            gen = _kernel.inode_generation(fd)
            cached = _pages(_kernel.page_runs(fd, st.st_size, "cache"))
            dirty = _pages(_kernel.page_runs(fd, st.st_size, "dirty"))
        finally:
            os.close(fd)
        name = f"{path.relative_to(root)} ({-(-st.st_size // PAGE)} pages, gen {gen})"
        found[(st.st_dev, st.st_ino)] = (name, cached, dirty)
    return found


def _mapped(vector: bytearray) -> set[int]:
    return {i for i, byte in enumerate(vector) if byte}


def mismatches(views: list[Any], root: Path) -> list[str]:
    """What the views get wrong, one line per file and view (empty: all agree)."""
    kernel = truth(root)
    wrong = []
    for number, view in enumerate(views):
        for key, (path, cached, dirty) in kernel.items():
            state = view.files.get(key)
            seen = _mapped(state.cached_map) if state else set()
            seen_dirty = _mapped(state.dirty_map) if state else set()
            if seen != cached or seen_dirty != dirty:
                wrong.append(
                    f"task {number} {path}: cached {len(seen)} (kernel {len(cached)}; only"
                    f" seen {sorted(seen - cached)[:4]}, only kernel {sorted(cached - seen)[:4]}),"
                    f" dirty {len(seen_dirty)} (kernel {len(dirty)})"
                    f"{f'; items of gen {state.uuid.gen}' if state else ''}"
                )
        for key, state in view.files.items():
            if key not in kernel and state.cached:
                wrong.append(f"task {number} <ino {key[1]}>: gone, {state.cached} pages left")
    return wrong


# -- one source set ------------------------------------------------------------------------


async def _consume(task: Any, view: Any, counts: dict[str, int]) -> None:
    from aioduet import Event  # noqa: PLC0415

    async for item in task:
        if item.state == Event.OVERFLOW:
            counts["overflows"] += 1
        view.apply(item)


async def _settle(views: list[Any], root: Path, seconds: float) -> tuple[list[str], float]:
    import anyio  # noqa: PLC0415

    started = anyio.current_time()
    wrong = mismatches(views, root)
    while wrong and anyio.current_time() - started < seconds:
        await anyio.sleep(0.25)  # a bench: waiting for the views to catch up, then asking again
        wrong = mismatches(views, root)
    return wrong, round(anyio.current_time() - started, 2)


def loss_report(before: Any, after: Any, counts: list[dict[str, int]]) -> dict[str, Any]:
    """What each source observed and lost between two ``status()`` snapshots, the OVERFLOW
    items each task counted, and whether some loss reached a task that heard of none."""
    old = {s.name: s for s in before.sources}
    sources = {
        s.name: {
            "observations": s.observations - old[s.name].observations,
            "lost": s.lost - old[s.name].lost,
            "overflows": s.overflows - old[s.name].overflows,
        }
        for s in after.sources
    }
    lost = sum(s["lost"] for s in sources.values())
    overflows = [c["overflows"] for c in counts]
    return {
        "sources": sources,
        "lost": lost,
        "overflows_per_task": overflows,
        "unsignalled_loss": lost > 0 and min(overflows) == 0,
    }


async def checks_after_sync(
    duet: Any,
    group: Any,
    views: list[Any],
    root: Path,
    seconds: float,
    *,
    consume: Any = _consume,
) -> dict[str, Any]:
    """Compare the views with the kernel again after a ``sync``, then a task registered now
    (its items consumed by ``consume`` in ``group``); returns the report's fields for both.

    A task registered now starts from the sources' own picture: if it agrees with the kernel
    where the older tasks do not, their items went astray, not the sources' maps.
    """
    import anyio.to_thread  # noqa: PLC0415

    from aioduet import Event  # noqa: PLC0415
    from aioduet.views import ResidencyView  # noqa: PLC0415

    await anyio.to_thread.run_sync(os.sync)
    wrong_synced, settled_synced = await _settle(views, root, seconds)
    fresh = ResidencyView()
    late = await duet.register("late", Event.EXISTS | Event.MODIFIED, root)
    group.start_soon(consume, late, fresh, {"overflows": 0})
    await late.wait_scanned()
    # Settled like the others: the kernel's own reclaim keeps changing the truth.
    wrong_fresh, _ = await _settle([fresh], root, seconds)
    return {
        "settle_seconds_after_sync": settled_synced,
        "mismatches_after_sync": len(wrong_synced),
        "mismatch_examples_after_sync": wrong_synced[:5],
        "mismatches_of_a_task_registered_after": len(wrong_fresh),
        "mismatch_examples_of_a_task_registered_after": wrong_fresh[:5],
    }


async def one_set(args: argparse.Namespace, sources: str, workdir: Path) -> dict[str, Any]:
    import anyio  # noqa: PLC0415
    import anyio.to_thread  # noqa: PLC0415

    import aioduet  # noqa: PLC0415
    import aioduet._framework  # noqa: PLC0415
    from aioduet import Event  # noqa: PLC0415
    from aioduet.sources import SourceOptions  # noqa: PLC0415
    from aioduet.views import ResidencyView  # noqa: PLC0415

    root = workdir / sources
    root.mkdir()
    populate(root, args.files, args.seed)
    # Small ring buffers: the flood overruns them, and the exact set must recover.
    setattr(  # noqa: B010 - open_duet has no option for it: the framework's factory
        aioduet._framework,
        "SourceOptions",
        functools.partial(SourceOptions, trace_buffer_kb=args.trace_buffer_kb),
    )
    views = [ResidencyView() for _ in range(args.tasks)]
    counts = [{"overflows": 0} for _ in range(args.tasks)]
    async with aioduet.open_duet(sources, interval=0.1) as duet, anyio.create_task_group() as tg:
        for view, count in zip(views, counts, strict=True):
            task = await duet.register("flood", Event.EXISTS | Event.MODIFIED, root)
            tg.start_soon(_consume, task, view, count)
            await task.wait_scanned()
        before = await duet.status()
        log(f"{sources}: flooding {args.files} files with {args.workers} workers")
        started = time.monotonic()
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            jobs = [
                pool.apply_async(flood, (str(root), args.seconds, args.seed + w, args.files))
                for w in range(args.workers)
            ]
            done = await anyio.to_thread.run_sync(lambda: [job.get() for job in jobs])
        flooding = time.monotonic() - started
        ops: dict[str, int] = {}
        for one in done:
            for op, n in one.items():
                ops[op] = ops.get(op, 0) + n
        wrong, settled = await _settle(views, root, args.settle)
        log(f"{sources}: {sum(ops.values())} operations, settled in {settled} s")
        checks = await checks_after_sync(duet, tg, views, root, args.settle)
        after = await duet.status()
        tg.cancel_scope.cancel()
    losses = loss_report(before, after, counts)
    return {
        "operations": ops,
        "operations_total": sum(ops.values()),
        "operations_per_second": round(sum(ops.values()) / flooding, 1),
        "observations_per_second": round(
            sum(s["observations"] for s in losses["sources"].values()) / flooding, 1
        ),
        **losses,
        "files_at_end": len(_paths(root)),
        "settle_seconds": settled,
        "mismatches": len(wrong),
        "mismatch_examples": wrong[:5],
        **checks,
    }


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    results = {}
    for round_ in range(args.floods):
        for sources in args.sets:
            key = sources if args.floods == 1 else f"{sources}#{round_}"
            results[key] = await one_set(args, sources, workdir / str(round_))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sets", type=lambda s: s.split(","), default=["scan", "exact"])
    parser.add_argument("--files", type=int, default=200, help="files in the tree at the start")
    parser.add_argument("--workers", type=int, default=2, help="flooding processes")
    parser.add_argument("--tasks", type=int, default=3, help="state-based tasks watching")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of flood")
    parser.add_argument("--floods", type=int, default=1, help="floods per source set")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds the views may take to agree"
    )
    parser.add_argument("--trace-buffer-kb", type=int, default=8, help="tracepoint ring buffers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the tree goes")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if min(args.files, args.workers, args.tasks, args.floods) < 1 or args.seconds <= 0:
        parser.error("--files, --workers, --tasks and --floods must be at least 1")
    import anyio  # noqa: PLC0415

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aioduet-flood-", dir=args.dir))
    try:
        for round_ in range(args.floods):
            (workdir / str(round_)).mkdir()
        results = anyio.run(measure, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "flood",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.dir),
        "parameters": {k: v for k, v in vars(args).items() if k not in ("json", "dir")},
        "sets": results,
        "mismatches": sum(r["mismatches"] + r["mismatches_after_sync"] for r in results.values()),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
