"""inotify rate: the event rate the inotify source sustains with no queue overflow.

Generator processes (``--generators``) read one byte with ``os.pread`` from ``--files``
files of one watched directory, round robin (the kernel merges identical consecutive events,
so one file would give far fewer events), each at its share of a target rate; the ladder of
target rates is ``--rates`` (0 = as fast as they can). For each rate, each reader runs in
this process for ``--seconds`` while the generators run, then drains the queue:

* ``source``: :class:`aioduet.sources.inotify.InotifySource` as in production, its ``run()``
  on an asyncio event loop (``--loop``), with a checker that only counts hints;
* ``bare``: a minimal ctypes reader in the same process: ``poll``, ``os.read``, a
  ``struct.unpack_from`` and name slice per record, nothing else (the floor);
* ``pyinotify``: pyinotify's own ``WatchManager`` + ``Notifier`` with a counting handler.

A reader keeps up at a rate when it received every generated event with no
``IN_Q_OVERFLOW``; its *sustained* rate is the highest such generated rate (a reader stops
climbing the ladder at its first overflow). Because the generators share the machine's CPUs
with the reader, the sustained rates can be limited by the generators (compare
``generated_per_second`` with the target); ``cpu_us_per_event`` (the reader's process CPU
time per event received) measures the readers' own cost regardless, and the ratios of both
to the bare reader are reported. Progress goes to stderr, the JSON object to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
from _common import log, machine, write_report

# Generator processes run this file too: they must start fast and need nothing of aioduet.
if sys.argv[1:2] != ["--generate"]:
    from aioduet._paths import PathIndex
    from aioduet.sources import Sink
    from aioduet.sources import _inotify_wire as wire
    from aioduet.sources.inotify import InotifySource
    from aioduet.store import Store

READERS = ("bare", "source", "pyinotify")
STEP = dict[str, Any]


# -- generators ---------------------------------------------------------------------------


def generate(directory: str, files: int, rate: float, seconds: float, offset: int) -> None:
    """Run in a child process: pread round robin at ``rate`` events/s (0: flat out)."""
    fds = [os.open(os.path.join(directory, f"f{i}"), os.O_RDONLY) for i in range(files)]
    pread = os.pread
    count = 0
    start = time.perf_counter()
    end = start + seconds
    n = len(fds)
    i = offset
    while True:
        for _ in range(256):
            pread(fds[i % n], 1, 0)
            i += 1
        count += 256
        now = time.perf_counter()
        if now >= end:
            break
        if rate:
            ahead = count / rate - (now - start)
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.perf_counter() - start
    print(json.dumps({"generated": count, "seconds": elapsed}), flush=True)


def spawn(directory: Path, args: argparse.Namespace, rate: float) -> list[subprocess.Popen[str]]:
    share = rate / args.generators
    return [
        subprocess.Popen(
            [
                *(sys.executable, __file__, "--generate", str(directory), str(args.files)),
                *(str(share), str(args.seconds), str(g)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for g in range(args.generators)
    ]


def collect(procs: list[subprocess.Popen[str]]) -> tuple[int, float]:
    generated, seconds = 0, 0.0
    for proc in procs:
        out, _ = proc.communicate()
        report = json.loads(out)
        generated += report["generated"]
        seconds = max(seconds, report["seconds"])
    return generated, seconds


# -- readers --------------------------------------------------------------------------------


def bare_reader(directory: Path, args: argparse.Namespace, rate: float) -> STEP:
    header = struct.Struct("iIII")
    unpack = header.unpack_from
    fd = wire.inotify_init1()
    try:
        wire.add_watch(fd, str(directory), wire.IN_ACCESS | wire.IN_ONLYDIR)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        received = overflows = 0
        cpu = time.process_time()
        procs = spawn(directory, args, rate)
        quiet = 0
        while quiet < 3 or any(p.poll() is None for p in procs):
            if not poller.poll(50):
                quiet += 1
                continue
            quiet = 0
            buf = os.read(fd, 1 << 17)
            off, end = 0, len(buf)
            while off < end:
                _wd, mask, _cookie, length = unpack(buf, off)
                _name = buf[off + 16 : off + 16 + length]
                off += 16 + length
                if mask & wire.IN_Q_OVERFLOW:
                    overflows += 1
                else:
                    received += 1
        cpu = time.process_time() - cpu
        generated, seconds = collect(procs)
    finally:
        os.close(fd)
    return step(rate, generated, seconds, received, overflows, cpu)


class CountingChecker:
    """A checker that only counts what it is asked."""

    def __init__(self) -> None:
        self.paths = 0

    def check_paths(self, paths: Iterable[str]) -> None:
        self.paths += len(list(paths))

    def check_tree(self, path: str) -> None:
        pass

    def path_gone(self, path: str) -> None:
        pass

    def path_moved(self, old: str, new: str) -> None:
        pass

    def check_dirty(self) -> None:
        pass

    def rescan(self, root: str | None) -> None:
        pass

    def cut(self, dev: int, ino: int, end: int) -> None:
        pass


class _NoIntro:
    slot = 0

    def looking(self) -> None:
        pass

    def cover(self, inodes: object) -> None:
        pass

    def deliver(self, observations: object) -> None:
        pass


async def _source_step(directory: Path, args: argparse.Namespace, rate: float) -> STEP:
    store = Store(8, relevance=lambda key, slot: True, notify=lambda slots: None)
    sink = Sink(store, PathIndex())
    sink.attach(CountingChecker())
    source = InotifySource(sink)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        source.add_scope(str(directory))
        await source.introduce(str(directory), _NoIntro())
        base = source.status().observations
        cpu = time.process_time()
        procs = spawn(directory, args, rate)
        while any(p.poll() is None for p in procs):  # noqa: ASYNC110 -- polls child processes
            await anyio.sleep(0.05)
        last = -1
        while last != source.status().observations:  # drain what is still queued
            last = source.status().observations
            await anyio.sleep(0.1)
        cpu = time.process_time() - cpu
        generated, seconds = collect(procs)
        status = source.status()
        tg.cancel_scope.cancel()
    return step(rate, generated, seconds, status.observations - base, status.overflows, cpu)


def source_reader(directory: Path, args: argparse.Namespace, rate: float) -> STEP:
    if args.loop == "uvloop":
        import uvloop  # noqa: PLC0415 -- optional

        return uvloop.run(_source_step(directory, args, rate))
    return asyncio.run(_source_step(directory, args, rate))


def pyinotify_reader(directory: Path, args: argparse.Namespace, rate: float) -> STEP:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it imports asyncore
        import pyinotify  # noqa: PLC0415 -- a peer, only here

    counts = {"received": 0, "overflows": 0}

    class Count(pyinotify.ProcessEvent):  # type: ignore[misc]
        def process_IN_Q_OVERFLOW(self, event: object) -> None:
            counts["overflows"] += 1

        def process_default(self, event: object) -> None:
            counts["received"] += 1

    manager = pyinotify.WatchManager()
    notifier = pyinotify.Notifier(manager, Count())
    try:
        manager.add_watch(str(directory), pyinotify.IN_ACCESS)
        cpu = time.process_time()
        procs = spawn(directory, args, rate)
        quiet = 0
        while quiet < 3 or any(p.poll() is None for p in procs):
            if notifier.check_events(50):
                quiet = 0
                notifier.read_events()
                notifier.process_events()
            else:
                quiet += 1
        cpu = time.process_time() - cpu
        generated, seconds = collect(procs)
    finally:
        notifier.stop()
    return step(rate, generated, seconds, counts["received"], counts["overflows"], cpu)


def step(  # noqa: PLR0917 -- one figure per argument, all named at the call sites' order
    rate: float, generated: int, seconds: float, received: int, overflows: int, cpu: float
) -> STEP:
    return {
        "target_rate": rate,
        "generated": generated,
        "seconds": round(seconds, 4),
        "generated_per_second": round(generated / seconds),
        "received": received,
        "received_per_second": round(received / seconds),
        "overflows": overflows,
        "kept_up": overflows == 0 and received >= generated,
        "cpu_seconds": round(cpu, 4),
        "cpu_us_per_event": round(cpu / received * 1e6, 3) if received else None,
    }


RUNNERS: dict[str, Callable[[Path, argparse.Namespace, float], STEP]] = {
    "bare": bare_reader,
    "source": source_reader,
    "pyinotify": pyinotify_reader,
}


# -- main -----------------------------------------------------------------------------------


def summarize(steps: list[STEP]) -> dict[str, Any]:
    kept = [s for s in steps if s["kept_up"]]
    costs = [s["cpu_us_per_event"] for s in steps if s["cpu_us_per_event"] is not None]
    # The busiest step measures the reader's own cost best (fixed costs spread thinnest).
    busiest = max(steps, key=lambda s: s["received"])
    return {
        "sustained_events_per_second": max((s["generated_per_second"] for s in kept), default=0),
        "max_received_per_second": max(s["received_per_second"] for s in steps),
        "overflowed_at_target": next((s["target_rate"] for s in steps if s["overflows"]), None),
        "cpu_us_per_event": busiest["cpu_us_per_event"],
        "min_cpu_us_per_event": min(costs, default=None),
        "steps": steps,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="generation time per step")
    parser.add_argument(
        "--rates",
        default="100000,200000,300000,400000,500000,0",
        help="comma-separated target events/s, ascending; 0 = as fast as possible",
    )
    parser.add_argument("--generators", type=int, default=1, help="generator processes")
    parser.add_argument("--files", type=int, default=4, help="files read round robin")
    parser.add_argument("--readers", default=",".join(READERS), help="readers to measure")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--generate":
        where, files, target, seconds, offset = sys.argv[2:7]
        generate(where, int(files), float(target), float(seconds), int(offset))
        return
    args = parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    readers = [r for r in args.readers.split(",") if r]
    unknown = set(readers) - set(READERS)
    if unknown:
        raise SystemExit(f"unknown readers: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="aioduet-bench-", dir="/tmp"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for i in range(args.files):
            (directory / f"f{i}").write_bytes(b"x" * 4096)
        for name in readers:
            steps: list[STEP] = []
            for rate in rates:
                result = RUNNERS[name](directory, args, rate)
                log(
                    f"{name:>9} target {rate:>9.0f}/s: generated {result['generated_per_second']}"
                    f"/s, received {result['received']}/{result['generated']},"
                    f" overflows {result['overflows']}, {result['cpu_us_per_event']} us/event"
                )
                steps.append(result)
                if not result["kept_up"]:
                    break
            results[name] = summarize(steps)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    bare = results.get("bare")
    ratios: dict[str, Any] = {}
    for name, summary in results.items():
        if name == "bare" or bare is None:
            continue
        ratios[name] = {
            "sustained_vs_bare": ratio(
                summary["sustained_events_per_second"], bare["sustained_events_per_second"]
            ),
            # Events per CPU second relative to the bare reader's: above 0.7 is the goal.
            "cpu_efficiency_vs_bare": ratio(bare["cpu_us_per_event"], summary["cpu_us_per_event"]),
        }
    report = {
        "benchmark": "inotify_rate",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(directory.parent),  # the files' directory itself is gone
            "max_queued_events": int(Path("/proc/sys/fs/inotify/max_queued_events").read_text()),
        },
        "parameters": {
            "seconds": args.seconds,
            "rates": rates,
            "generators": args.generators,
            "files": args.files,
            "readers": readers,
            "loop": args.loop,
        },
        "readers": results,
        "ratios": ratios,
        "generator_max_per_second": max(
            (s["generated_per_second"] for r in results.values() for s in r["steps"]), default=0
        ),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
