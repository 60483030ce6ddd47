"""Tracepoint rate: events/s from the tracefs ring buffers into the store, versus a bare parse.

A private tracefs instance with the tracepoint source's events and filters records the
page-cache events of ``--rounds`` passes of a generator process over a ``--pages``-page file
on ext4 (read one page at a time with ``POSIX_FADV_RANDOM``, so one order-0 folio and one add
event per page, then evicted: one delete event per page). The ring buffers are large enough
(``--buffer-kb`` per CPU) to hold them all, so the measured drain loses nothing (checked).
Then, in this process:

* ``source``: every CPU's buffer drained by :meth:`TracepointSource.drain` itself: read each
  page, parse it with time stamps, put the records of all CPUs in time order, turn them into
  observations and ingest them into a store with one always-relevant task slot; wall and CPU
  time per event;
* ``bare``: the same pages (kept from the first phase) parsed again with nothing else.

The JSON gives both rates and the ratio of their CPU costs (the goal: >= 400k events/s end to
end, at most 2x the bare parse). Progress goes to stderr, the JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import log, machine

PAGE = os.sysconf("SC_PAGE_SIZE")


def generate(path: str, rounds: int) -> None:
    """The generator process: read page by page, then evict, ``rounds`` times."""
    fd = os.open(path, os.O_RDONLY)
    size = os.fstat(fd).st_size
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    for _ in range(rounds):
        for offset in range(0, size, PAGE):
            os.pread(fd, 1, offset)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def measure(pages: int, rounds: int, buffer_kb: int) -> dict[str, Any]:  # noqa: PLR0915 - one run, in order
    from aioduet import Event  # noqa: PLC0415 - the generator process needs none of it
    from aioduet._paths import PathIndex  # noqa: PLC0415
    from aioduet.sources import Sink  # noqa: PLC0415
    from aioduet.sources import _tracefs as tf  # noqa: PLC0415
    from aioduet.sources.tracepoints import EVENTS, TracepointSource  # noqa: PLC0415
    from aioduet.store import Store  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="aioduet-bench-", dir="/tmp"))
    try:
        path = workdir / "data"
        with path.open("wb") as f:
            f.write(os.urandom(pages * PAGE))
            f.flush()
            os.fsync(f.fileno())
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        store = Store(2, relevance=lambda key, slot: True)
        slot = store.add_slot(Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED)
        losses: list[str | None] = []
        sink = Sink(store, PathIndex(), overflow=losses.append)
        source = TracepointSource(sink, buffer_kb=buffer_kb)
        source.add_scope(str(workdir))
        with tf.Instance.create(EVENTS, buffer_kb=buffer_kb) as instance:
            parser = source.bind(instance)
            for event, expression in source.filters().items():
                if event in instance.formats:
                    instance.set_filter(event, expression)
            instance.enable()
            log(f"generating {2 * pages * rounds} events ...")
            subprocess.run(
                [sys.executable, __file__, "--generate", str(path), str(rounds)], check=True
            )
            instance.enable(False)
            fds = [instance.open_pipe(cpu) for cpu in instance.cpus()]
            kept: list[bytes] = []
            original = os.read

            def keeping(fd: int, size: int) -> bytes:
                page = original(fd, size)
                if page:
                    kept.append(page)  # for the bare parse below
                return page

            ordered = instance.clock == "mono"
            wall0, cpu0 = time.perf_counter(), time.process_time()
            os.read = keeping  # TracepointSource.drain reads through os.read
            try:
                while source.drain(fds, parser, instance.page_size, ordered=ordered):
                    pass
            finally:
                os.read = original
            wall1, cpu1 = time.perf_counter(), time.process_time()
            for fd in fds:
                os.close(fd)
        events = len(_count(parser, kept))
        pending = store.drain(slot, 1 << 30)
        wall2, cpu2 = time.perf_counter(), time.process_time()
        for page in kept:
            parser.parse(page, [])
        wall3, cpu3 = time.perf_counter(), time.process_time()
        src_wall, src_cpu = wall1 - wall0, cpu1 - cpu0
        bare_wall, bare_cpu = wall3 - wall2, cpu3 - cpu2
        return {
            "events": events,
            "expected_events": 2 * pages * rounds,
            "ring_pages": len(kept),
            "lost": len(losses),
            "pending_runs": len(pending),
            "source": {
                "events_per_second": events / src_wall if src_wall else None,
                "cpu_us_per_event": 1e6 * src_cpu / events if events else None,
            },
            "bare": {
                "events_per_second": events / bare_wall if bare_wall else None,
                "cpu_us_per_event": 1e6 * bare_cpu / events if events else None,
            },
            "cost_ratio": src_cpu / bare_cpu if bare_cpu else None,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _count(parser: Any, pages: list[bytes]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for page in pages:
        parser.parse(page, out)
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--generate"]:
        generate(args[1], int(args[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=65536, help="pages in the file")
    parser.add_argument("--rounds", type=int, default=4, help="read+evict passes")
    parser.add_argument("--buffer-kb", type=int, default=262144, help="ring buffer per CPU")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    opts = parser.parse_args(args)
    result = {
        "benchmark": "tracepoint_rate",
        "machine": machine(Path("/tmp")),  # where measure() makes its file
        "options": {"pages": opts.pages, "rounds": opts.rounds, "buffer_kb": opts.buffer_kb},
        **measure(opts.pages, opts.rounds, opts.buffer_kb),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if opts.json is not None:
        opts.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
