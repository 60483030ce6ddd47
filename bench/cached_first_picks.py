"""Cost of a pick of ``aioduet.tasks.cached_first`` as the tree grows, against a rescan.

For each tree size ``n`` in ``--files`` (one-page files, 1000 per directory, in a fresh
directory under ``--base``, written, synced and evicted), a framework (``--sources``) runs an
EXISTS task on the tree; ``--cached`` of the files (a fraction, spread evenly) are read, and
the benchmark waits until their items reached the task. Then it times:

* ``cached_first``: the first pick (which reads and stats the whole order in a worker
  thread: O(n) once), then every other pick; ``pick_microseconds`` is their mean.
* ``rescan`` (the peer, in the same run): a picker without priorities that, for each pick,
  asks ``cachestat`` about every file not yet picked and takes the most cached: O(n) per pick.
  Timed over ``--rescan-picks`` picks only.

The figure of merit is how the cost per pick grows from the smallest tree to the largest:
``growth`` is the ratio of per-pick times (1.0 means flat; a rescan grows like ``n``). JSON on
stdout (and ``--json FILE``), progress on stderr. Not a test: it never fails for slowness.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from _common import log, machine, write_report

import aioduet
from aioduet import Event, _kernel
from aioduet.tasks import cached_first

PER_DIR = 1000


def make_tree(base: Path, files: int) -> list[str]:
    root = Path(tempfile.mkdtemp(prefix=f"aioduet-picks-{files}-", dir=base))
    paths = []
    page = os.urandom(_kernel.PAGE_SIZE)
    for i in range(files):
        directory = root / f"d{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            directory.mkdir()
        path = directory / f"f{i % PER_DIR:04d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, page)
        finally:
            os.close(fd)
        paths.append(str(path))
    os.sync()
    for name in paths:
        fd = os.open(name, os.O_RDONLY)
        try:
            _kernel.evict(fd)
        finally:
            os.close(fd)
    return paths


def read_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.read(fd, _kernel.PAGE_SIZE)
    finally:
        os.close(fd)


def rescan_pick(remaining: list[str]) -> str:
    """The most cached of ``remaining`` by asking cachestat about each: O(n) per pick."""
    best, best_cached = remaining[0], -1
    for path in remaining:
        fd = os.open(path, os.O_RDONLY)
        try:
            cached = _kernel.cachestat(fd).cache
        finally:
            os.close(fd)
        if cached > best_cached:
            best, best_cached = path, cached
    return best


async def measure(paths: list[str], args: argparse.Namespace) -> dict[str, Any]:
    root = os.path.dirname(os.path.dirname(paths[0]))
    step = max(1, round(1 / args.cached)) if args.cached > 0 else 0
    warm = paths[::step] if step else []
    async with (
        aioduet.open_duet(args.sources) as duet,
        duet.register("picks", Event.EXISTS, root) as task,
    ):
        await task.wait_scanned()
        for path in warm:
            read_file(path)
        with anyio.fail_after(60):  # the items of the warm files reach the task
            while task.statistics().pending_pages < len(warm):  # noqa: ASYNC110 - a counter
                await anyio.sleep(0.01)
        picks = cached_first(task)
        started = time.perf_counter()
        first = await picks.__anext__()
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        count = 1
        async for _file in picks:
            count += 1
        rest_seconds = time.perf_counter() - started
    assert first.path in warm or not warm
    remaining = list(paths)
    for path in warm:
        read_file(path)  # cached again for the peer (a DAMON daemon may have evicted them)
    picks_timed = min(args.rescan_picks, len(remaining))
    started = time.perf_counter()
    for _ in range(picks_timed):
        remaining.remove(rescan_pick(remaining))
    rescan_seconds = time.perf_counter() - started
    return {
        "files": len(paths),
        "cached_files": len(warm),
        "picked": count,
        "from_cache": picks.from_cache,
        "first_pick_seconds": round(first_seconds, 4),
        "pick_microseconds": round(rest_seconds / max(1, count - 1) * 1e6, 2),
        "rescan_pick_microseconds": round(rescan_seconds / picks_timed * 1e6, 2),
        "rescan_picks_timed": picks_timed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--files", default="2000,20000", help="tree sizes, comma-separated (default 2000,20000)"
    )
    parser.add_argument("--cached", type=float, default=0.05, help="fraction of files read")
    parser.add_argument("--rescan-picks", type=int, default=20, help="picks timed for the peer")
    parser.add_argument("--sources", default="auto", help="open_duet(sources=...)")
    parser.add_argument("--base", type=Path, default=Path("/tmp"), help="where trees go")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    try:
        sizes = [int(n) for n in args.files.split(",")]
    except ValueError:
        parser.error(f"--files must be integers separated by commas, not {args.files!r}")
    if not sizes or min(sizes) < 1 or not 0 <= args.cached <= 1 or args.rescan_picks < 1:
        parser.error("--files must be positive, --cached within 0..1, --rescan-picks >= 1")
    results = []
    for n in sizes:
        log(f"making {n} files under {args.base}")
        paths = make_tree(args.base, n)
        try:
            result = anyio.run(measure, paths, args)
        finally:
            shutil.rmtree(os.path.dirname(os.path.dirname(paths[0])), ignore_errors=True)
        log(
            f"n={n}: cached_first {result['pick_microseconds']} µs/pick,"
            f" rescan {result['rescan_pick_microseconds']} µs/pick"
        )
        results.append(result)
    small, large = results[0], results[-1]
    report = {
        "benchmark": "cached_first_picks",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.base),
        "parameters": {
            "files": sizes,
            "cached": args.cached,
            "rescan_picks": args.rescan_picks,
            "sources": args.sources,
        },
        "results": results,
        "growth": {
            "files": round(large["files"] / small["files"], 2),
            "cached_first": round(large["pick_microseconds"] / small["pick_microseconds"], 3),
            "rescan": round(
                large["rescan_pick_microseconds"] / small["rescan_pick_microseconds"], 3
            ),
        },
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
