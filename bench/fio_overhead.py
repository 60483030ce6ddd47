"""Foreground overhead: fio's throughput with an aioduet framework watching, versus without.

Two fio workloads (``--ioengine=psync``, one job, time-based, ``--runtime`` seconds each) run
in a fresh directory under ``--dir`` (ext4 expected):

* ``randread``: random 4 KiB reads over a ``--size`` file that is fully cached. The file is
  read again right before every run, because a DAMON daemon evicts idle page cache within
  about a minute; ``cached_fraction`` records what ``cachestat`` found just before fio starts.
* ``seqwrite``: sequential 1 MiB writes to a new ``--size`` file, ``end_fsync=1`` (the fsync
  counts in fio's throughput); the file is removed after each run and everything synced.

Each workload runs ``--warmup`` times without the framework, uncounted (the first write runs
after the read file was made are slower), then ``--repeat`` times WITHOUT and WITH the
framework, alternating (ABBA: the order flips every repetition, so a drift of the machine does
not favour one side). WITH
means: a separate Python process (this script with ``--worker``, so that fio and Python
share no GIL and the framework gets its own CPU time) opens ``open_duet(--sources)``,
registers one task for ADDED|REMOVED|DIRTY|FLUSHED on the directory, waits for its
registration scan, says ``ready`` and consumes the items as they come with ``async for``
until SIGTERM; it then prints its CPU time, items, pages and the sources' counters over that
window (from ``ready`` to SIGTERM: the fio run, plus the pre-read of ``randread``'s file).

The JSON gives the medians of fio's throughput (``bw_bytes``, ``iops``) with and without, their
ratio (``ratio``: with over without; the goal is >= 0.99) and the worker's figures. It is not
a test: it never fails because a machine is slow. Progress goes to stderr, the JSON object to
stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import binary_size, filesystem_of, log, machine, write_report

CHUNK = 1 << 20
WORKLOADS = ("randread", "seqwrite")


def parse_size(text: str) -> int:
    """``8M``, ``1G``, ``4096``: binary units, as fio reads them; a multiple of 1M."""
    value = binary_size(text)
    if value < CHUNK or value % CHUNK:
        raise argparse.ArgumentTypeError(f"size must be a positive multiple of 1M, not {text!r}")
    return value


# -- the framework's process ---------------------------------------------------------------


async def _recorder(sources: str, scope: str, interval: float) -> dict[str, Any]:
    """``aioduet record`` in the worker: frames every ``interval`` s into a scratch file."""
    import anyio  # noqa: PLC0415 - only the worker process needs the framework

    import aioduet  # noqa: PLC0415
    from aioduet import views  # noqa: PLC0415

    counts = {"frames": 0, "items": 0, "overflows": 0}
    first: list[dict[str, int]] = []
    stop, started = anyio.Event(), anyio.Event()

    def on_frame(frame: views.FrameSummary) -> None:
        counts["frames"] += 1
        counts["items"] += frame.items
        counts["overflows"] += frame.overflows
        if not first:  # the first frame holds the registration scan: the window opens after
            first.append(dict(counts))
            started.set()

    with tempfile.TemporaryDirectory(prefix="aioduet-fio-rec-") as where:
        out = Path(where) / "fio.rec"
        async with (
            aioduet.open_duet(sources, interval=interval) as duet,
            anyio.create_task_group() as group,
        ):

            async def run() -> None:
                await views.record(
                    duet, scope, out, interval=interval, on_frame=on_frame, stop=stop
                )

            group.start_soon(run)
            with anyio.fail_after(120):
                await started.wait()
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                cpu0, wall0 = time.process_time(), time.monotonic()
                print("ready", flush=True)
                async for _ in signals:
                    break
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            stop.set()
        size = out.stat().st_size
    start = first[0]
    return {
        "cpu_seconds": round(cpu, 4),
        "seconds": round(wall, 3),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        **{name: counts[name] - start[name] for name in counts},
        "recording_bytes": size,
        "interval": interval,
    }


async def _worker(sources: str, scope: str) -> dict[str, Any]:
    import anyio  # noqa: PLC0415 - only the worker process needs the framework

    import aioduet  # noqa: PLC0415
    from aioduet import Event  # noqa: PLC0415

    counts = {"items": 0, "pages": 0, "overflows": 0}
    mask = Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED
    async with aioduet.open_duet(sources) as duet:
        task = await duet.register("fio", mask, scope)

        async def consume() -> None:
            async for item in task:
                counts["items"] += 1
                counts["pages"] += item.count
                if item.state == Event.OVERFLOW:
                    counts["overflows"] += 1

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await task.wait_scanned()
            # Let the registration scan's items go before the window opens.
            await anyio.sleep(0.5)
            before = await duet.status()
            start = dict(counts)
            with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                cpu0, wall0 = time.process_time(), time.monotonic()
                print("ready", flush=True)
                async for _ in signals:
                    break
            cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
            after = await duet.status()
            group.cancel_scope.cancel()
    old = {s.name: s for s in before.sources}
    return {
        "cpu_seconds": round(cpu, 4),
        "seconds": round(wall, 3),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 2),
        **{name: counts[name] - start[name] for name in counts},
        "sources": {
            s.name: {
                "observations": s.observations - old[s.name].observations,
                "lost": s.lost - old[s.name].lost,
                "errors": s.errors - old[s.name].errors,
            }
            for s in after.sources
        },
    }


def worker_main(sources: str, scope: str, record_interval: float | None) -> None:
    import anyio  # noqa: PLC0415

    if record_interval is None:
        result = anyio.run(_worker, sources, scope)
    else:
        result = anyio.run(_recorder, sources, scope, record_interval)
    print(json.dumps(result), flush=True)


class Framework:
    """The worker process, from ``ready`` to the counters it prints at SIGTERM."""

    def __init__(
        self, sources: str, scope: Path, timeout: float, record_interval: float | None
    ) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(scope)]
        if record_interval is not None:
            command += ["--record", str(record_interval)]
        self.process = subprocess.Popen(
            [*command, "--sources", sources], stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.process.kill()
            self.process.wait()
            raise RuntimeError(f"the framework's process did not start: {line!r}")

    def stop(self) -> dict[str, Any]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=120)
        if self.process.returncode != 0:
            raise RuntimeError(f"the framework's process failed ({self.process.returncode})")
        result: dict[str, Any] = json.loads(out)
        return result


# -- fio -----------------------------------------------------------------------------------


def fio_command(fio: str, workload: str, path: Path, size: int, runtime: float) -> list[str]:
    common = [
        *(fio, f"--name={workload}", f"--filename={path}", f"--size={size}"),
        *("--ioengine=psync", "--numjobs=1", "--direct=0", "--invalidate=0"),
        *("--time_based", f"--runtime={runtime:g}", "--output-format=json"),
    ]
    if workload == "randread":
        return [*common, "--rw=randread", "--bs=4k", "--randrepeat=1"]
    return [*common, "--rw=write", "--bs=1M", "--end_fsync=1", "--fallocate=none"]


def read_whole(path: Path) -> float:
    """Read the file so that all of it is cached; returns the fraction cached afterwards."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        for offset in range(0, size, CHUNK):
            os.pread(fd, CHUNK, offset)
        return cached_fraction(fd, size)
    finally:
        os.close(fd)


def cached_fraction(fd: int, size: int) -> float:
    from aioduet import _kernel  # noqa: PLC0415 - cachestat's wrapper, nothing else

    page = os.sysconf("SC_PAGE_SIZE")
    return round(_kernel.cachestat(fd).cache / (size // page), 4)


def make_file(path: Path, size: int) -> None:
    block = os.urandom(CHUNK)
    with open(path, "wb") as out:
        for _ in range(size // CHUNK):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def one_run(
    args: argparse.Namespace, fio: str, workdir: Path, workload: str, *, run: int, watched: bool
) -> dict[str, Any]:
    framework = (
        Framework(args.sources, workdir, args.ready_timeout, args.record) if watched else None
    )
    try:
        cached = None
        if workload == "randread":
            path = workdir / "randread.dat"
            cached = read_whole(path)  # DAMON evicts idle pages within a minute: read again
        else:
            path = workdir / f"seqwrite-{run}-{'with' if watched else 'without'}.dat"
        started = time.monotonic()
        done = subprocess.run(
            fio_command(fio, workload, path, args.size, args.runtime),
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.monotonic() - started
    finally:
        worker = framework.stop() if framework is not None else None
    if done.returncode != 0:
        raise RuntimeError(f"fio failed ({done.returncode}): {done.stderr.strip()}")
    job = json.loads(done.stdout)["jobs"][0]
    side = job["read" if workload == "randread" else "write"]
    if workload == "seqwrite":
        path.unlink()
        os.sync()
    result = {
        "bw_bytes": side["bw_bytes"],
        "iops": round(side["iops"], 1),
        "fio_runtime_ms": side["runtime"],
        "wall_seconds": round(wall, 3),
        "cached_fraction": cached,
        "framework": worker,
    }
    shown = (
        f"{side['iops']:.0f} IOPS"
        if workload == "randread"
        else f"{side['bw_bytes'] / 1e6:.0f} MB/s"
    )
    label = f"run {run}" if run >= 0 else "warm-up"
    log(f"{workload} {label} {'with' if watched else 'without'}: {shown}")
    return result


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    def median(side: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[side]))

    frameworks = [r["framework"] for r in runs["with"]]
    summary: dict[str, Any] = {}
    for key in ("bw_bytes", "iops"):
        without, with_ = median("without", key), median("with", key)
        summary[key] = {"without": without, "with": with_}
    summary["mb_per_second"] = {
        side: round(summary["bw_bytes"][side] / 1e6, 1) for side in ("without", "with")
    }
    without, with_ = summary["bw_bytes"]["without"], summary["bw_bytes"]["with"]
    summary["ratio"] = round(with_ / without, 4) if without else None
    summary["pair_ratios"] = [
        round(w["bw_bytes"] / o["bw_bytes"], 4) if o["bw_bytes"] else None
        for w, o in zip(runs["with"], runs["without"], strict=True)
    ]
    summary["goal_ratio"] = 0.99
    summary["framework"] = {
        "cpu_seconds": statistics.median(f["cpu_seconds"] for f in frameworks),
        "cpu_percent_of_one_core": statistics.median(
            f["cpu_percent_of_one_core"] for f in frameworks
        ),
        "items": statistics.median(f["items"] for f in frameworks),
        "overflows": sum(f["overflows"] for f in frameworks),
    }
    if "sources" in frameworks[0]:  # a task's loop
        summary["framework"] |= {
            "pages": statistics.median(f["pages"] for f in frameworks),
            "observations": {
                name: statistics.median(f["sources"][name]["observations"] for f in frameworks)
                for name in frameworks[0]["sources"]
            },
            "lost": sum(s["lost"] for f in frameworks for s in f["sources"].values()),
        }
    else:  # aioduet record
        summary["framework"] |= {
            "frames": statistics.median(f["frames"] for f in frameworks),
            "recording_bytes": statistics.median(f["recording_bytes"] for f in frameworks),
            "recording_bytes_per_frame": round(
                statistics.median(f["recording_bytes"] / max(1, f["frames"]) for f in frameworks)
            ),
        }
    summary["runs"] = runs
    return summary


def measure(args: argparse.Namespace, fio: str, workdir: Path) -> dict[str, Any]:
    log(f"writing {args.size >> 20} MiB to {workdir / 'randread.dat'}")
    make_file(workdir / "randread.dat", args.size)
    results: dict[str, Any] = {}
    for workload in args.workloads:
        runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        for run in range(-args.warmup, 0):  # the first write runs are slower: not counted
            one_run(args, fio, workdir, workload, run=run, watched=False)
        for run in range(args.repeat):
            order = (False, True) if run % 2 == 0 else (True, False)
            for watched in order:
                result = one_run(args, fio, workdir, workload, run=run, watched=watched)
                runs["with" if watched else "without"].append(result)
        results[workload] = summarise(runs)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", type=float, default=10.0, help="seconds per fio run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload and side")
    parser.add_argument(
        "--warmup", type=int, default=1, help="uncounted runs without, per workload, first"
    )
    parser.add_argument("--size", type=parse_size, default="1G", help="file size (8M, 1G)")
    parser.add_argument(
        "--sources", default="exact", help="the framework's source set (exact, scan) or names"
    )
    parser.add_argument(
        "--workloads",
        type=lambda s: s.split(","),
        default=list(WORKLOADS),
        help="randread,seqwrite",
    )
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the files go")
    parser.add_argument(
        "--ready-timeout", type=float, default=120.0, help="seconds the framework may take to start"
    )
    parser.add_argument(
        "--record",
        type=float,
        default=None,
        metavar="INTERVAL",
        help="WITH runs `aioduet record` (a frame every INTERVAL s) instead of a task's loop",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--worker", metavar="SCOPE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker_main(args.sources, args.worker, args.record)
        return
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.record is not None and not args.record > 0:
        parser.error("--record's interval must be positive")
    if args.repeat < 1 or args.warmup < 0 or args.runtime <= 0:
        parser.error("--repeat must be at least 1, --warmup not negative, --runtime positive")
    fio = shutil.which("fio")
    if fio is None:
        sys.exit("fio_overhead: fio is not installed (apt-get install fio)")
    version = subprocess.run([fio, "--version"], capture_output=True, text=True, check=True)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="aioduet-fio-", dir=args.dir))
    try:
        results = measure(args, fio, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report = {
        "benchmark": "fio_overhead",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {**machine(args.dir), "fio": version.stdout.strip()},
        "parameters": {
            "runtime": args.runtime,
            "repeat": args.repeat,
            "warmup": args.warmup,
            "size": args.size,
            "sources": args.sources,
            "watcher": "task" if args.record is None else f"record every {args.record} s",
            "workloads": args.workloads,
            "filesystem": filesystem_of(args.dir)["type"] or "unknown",
        },
        "workloads": results,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
