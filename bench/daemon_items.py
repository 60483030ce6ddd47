"""Items per second delivered over the daemon's socket, against the embedded framework.

A fresh tree of ``--files`` files on the ext4 of ``--dir`` holds ``--items`` cached pages,
every other page of each file (written 4 KiB at a time, so the page cache keeps single-page
folios, then the odd pages dropped with ``POSIX_FADV_DONTNEED``): a task registered for
``ADDED`` on the tree gets one item per cached page from its registration scan, with no disk
I/O. Before each measurement the even pages are read again (``POSIX_FADV_RANDOM``, one byte
each: a page DAMON evicted meanwhile comes back alone) and the odd ones dropped again.

Each measurement runs consumers in worker processes (this script with ``--worker``): a worker
connects (``aioduet.connect``) or opens an embedded framework (``aioduet.open_duet``) with the
same ``--sources``, registers its task(s), waits for the registration scans, reads from the
status how many pages are pending (the backlog), says it is ready, and on the word of the
parent drains the backlog, timing from the word to the last item, with its CPU time
(``time.process_time``). Consumers: ``fetch`` (``await task.fetch(--batch)`` in a loop) and
``iter`` (``async for item in task``). Configurations, per consumer and repetition:

* ``embedded``: one process, one embedded framework, one task;
* ``daemon``: one client process, one task, served by a daemon (``python -m aioduet daemon``,
  started once by this script, same sources);
* ``embedded_tasks``: one process, one embedded framework, ``--clients`` tasks drained at
  once (the same pages are pending for each);
* ``daemon_clients``: ``--clients`` client processes, one task each, at once.

Rates are pages (= items) per second of the consumers: the backlog over the time from the
start to the last item (all tasks together for the multi-task configurations, the earliest
start to the latest end). The daemon's CPU time over a measurement comes from
``/proc/PID/stat`` (clock ticks). ``ratio`` is daemon over embedded, medians of
``--repeat`` runs (the issue's goal: at least 0.5). Not a test: it never fails because a
machine is slow. Progress goes to stderr, the JSON object to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
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

from _common import daemon_socket, log, machine, wait_listening, write_report

PAGE = os.sysconf("SC_PAGE_SIZE")
CONSUMERS = ("fetch", "iter")
GOAL_RATIO = 0.5
READY_TIMEOUT = 300.0  # seconds a worker may take to register and scan
STALL = 10.0  # seconds without a new item after which a worker stops draining


# -- the tree --------------------------------------------------------------------------------


def make_tree(path: Path, items: int, files: int) -> list[Path]:
    """``files`` files holding ``items`` cached pages together: every other page cached."""
    path.mkdir()
    made = []
    block = os.urandom(PAGE * 256)
    per_file = -(-items // files)
    left = items
    for number in range(files):
        pages = 2 * min(per_file, left)
        left -= pages // 2
        name = path / f"f{number:03d}.dat"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # 4 KiB writes: ext4 then caches order-0 folios, which DONTNEED can drop one
            # page at a time (a larger write makes large folios, dropped whole or not at all).
            view = memoryview(block)
            for page in range(pages):
                at = (page % 256) * PAGE
                os.write(fd, view[at : at + PAGE])
            os.fsync(fd)
        finally:
            os.close(fd)
        made.append(name)
        if not left:
            break
    return made


def refresh(files: list[Path]) -> tuple[int, int]:
    """Even pages cached, odd pages not: returns (cached pages, pages of the files)."""
    from aioduet import _kernel  # noqa: PLC0415 - cachestat's wrapper

    cached = total = 0
    for name in files:
        fd = os.open(name, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            pages = size // PAGE
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no read-ahead of odd pages
            for page in range(0, pages, 2):
                os.pread(fd, 1, page * PAGE)
            for page in range(1, pages, 2):
                os.posix_fadvise(fd, page * PAGE, PAGE, os.POSIX_FADV_DONTNEED)
            cached += _kernel.cachestat(fd).cache
            total += pages
        finally:
            os.close(fd)
    return cached, total


# -- the worker (a consumer process) -------------------------------------------------------------


async def _drain(
    task: Any, expected: int, consumer: str, batch: int, clock: dict[str, float]
) -> int:
    """Take items until ``expected`` pages came; the pages taken."""
    pages = 0
    if consumer == "fetch":
        while pages < expected:
            for item in await task.fetch(batch):
                pages += item.count
            clock["last"] = time.monotonic()
    else:
        async for item in task:
            pages += item.count
            if pages >= expected:
                break
        clock["last"] = time.monotonic()
    return pages


async def worker(args: argparse.Namespace) -> None:
    import anyio  # noqa: PLC0415 - only workers run an event loop

    import aioduet  # noqa: PLC0415
    from aioduet import Event  # noqa: PLC0415

    if args.connect is not None:
        framework: Any = aioduet.connect(args.connect)
    else:
        sources = (
            args.sources if args.sources in ("auto", "scan", "exact") else args.sources.split(",")
        )
        framework = aioduet.open_duet(sources, max_tasks=max(8, args.tasks))
    async with contextlib.AsyncExitStack() as stack:
        duet = await stack.enter_async_context(framework)
        tasks = []
        for number in range(args.tasks):
            registration = duet.register(f"items-{os.getpid()}-{number}", Event.ADDED, args.tree)
            tasks.append(await stack.enter_async_context(registration))
        for task in tasks:
            await task.wait_scanned()
        pending = {t.id: t.statistics.pending_pages for t in (await duet.status()).tasks}
        expected = [pending[task.id] for task in tasks]
        print(f"ready {sum(expected)}", flush=True)
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        if line.strip() != "go":
            return
        results: list[int] = [0] * len(tasks)
        clock = {"start": time.monotonic(), "last": time.monotonic()}
        cpu = time.process_time()

        async def one(number: int) -> None:
            results[number] = await _drain(
                tasks[number], expected[number], args.consumer, args.batch, clock
            )

        async def watchdog(drains: Any) -> None:
            seen = -1.0
            while True:
                await anyio.sleep(STALL)
                if clock["last"] == seen:
                    log(f"worker {os.getpid()}: no item for {STALL:g} s, stopping")
                    drains.cancel_scope.cancel()
                seen = clock["last"]

        async with anyio.create_task_group() as group:
            guard = group.cancel_scope
            async with anyio.create_task_group() as drains:
                group.start_soon(watchdog, drains)
                for number in range(len(tasks)):
                    drains.start_soon(one, number)
            guard.cancel()
        end = clock["last"]
        cpu = time.process_time() - cpu
    report = {
        "pid": os.getpid(),
        "tasks": len(tasks),
        "expected_pages": sum(expected),
        "pages": sum(results),
        "start": clock["start"],
        "end": end,
        "seconds": end - clock["start"],
        "cpu_seconds": cpu,
    }
    print(json.dumps(report), flush=True)


def run_worker(args: argparse.Namespace) -> None:
    import anyio  # noqa: PLC0415

    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401, PLC0415 - only probing: the daemon uses it where installed
    except ImportError:
        pass
    else:
        options["use_uvloop"] = True
    anyio.run(worker, args, backend_options=options)


# -- the parent ------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks (``/proc/PID/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


TICK = 1 / os.sysconf("SC_CLK_TCK")


def start_daemon(socket_path: Path, sources: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as errors:
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aioduet",
                "daemon",
                "--socket",
                str(socket_path),
                "--sources",
                sources,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        wait_listening(daemon, socket_path, log_path.read_text)
    except RuntimeError:
        daemon.kill()
        raise
    return daemon


def stop_daemon(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def _readline(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"worker {process.pid} did not answer in time")
        ready, _, _ = select.select([process.stdout], [], [], min(left, 1.0))
        if ready:
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {process.pid} exited ({process.wait()})")
            return line


def measure(
    args: argparse.Namespace,
    *,
    processes: int,
    tasks: int,
    connect: Path | None,
    daemon: subprocess.Popen[bytes] | None,
    files: list[Path],
) -> dict[str, Any]:
    """One configuration: ``processes`` workers of ``tasks`` tasks each, drained at once."""
    cached, _ = refresh(files)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--tree",
        str(args.tree),
        "--tasks",
        str(tasks),
        "--consumer",
        args.consumer_now,
        "--batch",
        str(args.batch),
        "--sources",
        args.sources,
    ]
    if connect is not None:
        command += ["--connect", str(connect)]
    workers = [
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        backlog = [int(_readline(w, deadline).split()[1]) for w in workers]
        ticks0 = cpu_ticks(daemon.pid) if daemon is not None else 0
        for w in workers:
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        deadline = time.monotonic() + READY_TIMEOUT
        reports = [json.loads(_readline(w, deadline)) for w in workers]
        daemon_cpu = (cpu_ticks(daemon.pid) - ticks0) * TICK if daemon is not None else None
        for w in workers:
            w.wait(30)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    pages = sum(r["pages"] for r in reports)
    seconds = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    clients_cpu = sum(r["cpu_seconds"] for r in reports)
    figures: dict[str, Any] = {
        "cached_pages": cached,
        "backlog_pages": sum(backlog),
        "pages": pages,
        "seconds": round(seconds, 4),
        "items_per_second": round(pages / seconds) if seconds > 0 else None,
        "consumer_cpu_seconds": round(clients_cpu, 3),
        "daemon_cpu_seconds": None if daemon_cpu is None else round(daemon_cpu, 2),
        "consumer_cpu_us_per_item": round(clients_cpu / pages * 1e6, 3) if pages else None,
        "per_process": [
            {
                "pages": r["pages"],
                "seconds": round(r["seconds"], 4),
                "items_per_second": round(r["pages"] / r["seconds"]) if r["seconds"] > 0 else None,
                "cpu_seconds": round(r["cpu_seconds"], 3),
            }
            for r in reports
        ],
    }
    if daemon_cpu is not None and pages:
        figures["daemon_cpu_us_per_item"] = round(daemon_cpu / pages * 1e6, 3)
        figures["total_cpu_us_per_item"] = round((daemon_cpu + clients_cpu) / pages * 1e6, 3)
    return figures


def summarise(runs: dict[str, list[dict[str, Any]]], clients: int) -> dict[str, Any]:
    def median(side: str, key: str) -> float | None:
        values = [r[key] for r in runs[side] if r.get(key) is not None]
        return statistics.median(values) if values else None

    summary: dict[str, Any] = {}
    for side, items in runs.items():
        if not items:
            continue
        summary[side] = {
            "items_per_second": median(side, "items_per_second"),
            "consumer_cpu_us_per_item": median(side, "consumer_cpu_us_per_item"),
        }
        if side.startswith("daemon"):
            summary[side]["daemon_cpu_us_per_item"] = median(side, "daemon_cpu_us_per_item")
            summary[side]["total_cpu_us_per_item"] = median(side, "total_cpu_us_per_item")
        if side == "daemon_clients":
            per_client = [p["items_per_second"] for r in items for p in r["per_process"]]
            summary[side]["clients"] = clients
            summary[side]["per_client_items_per_second"] = {
                "min": min(per_client),
                "median": statistics.median(per_client),
                "max": max(per_client),
            }
        summary[side]["runs"] = items

    def ratio(top: str, bottom: str) -> float | None:
        a = summary.get(top, {}).get("items_per_second")
        b = summary.get(bottom, {}).get("items_per_second")
        return round(a / b, 3) if a and b else None

    summary["ratio"] = ratio("daemon", "embedded")
    summary["goal_ratio"] = GOAL_RATIO
    summary["clients_ratio_vs_embedded_tasks"] = ratio("daemon_clients", "embedded_tasks")
    summary["clients_ratio_vs_embedded"] = ratio("daemon_clients", "embedded")
    return summary


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    args.tree = work / "tree"
    log(f"making {args.items} cached pages in {args.files} files under {args.tree}")
    made = time.monotonic()
    files = make_tree(args.tree, args.items, args.files)
    cached, total = refresh(files)
    log(f"tree: {cached} of {total} pages cached ({time.monotonic() - made:.1f} s)")
    socket_path = daemon_socket(work)
    daemon = start_daemon(socket_path, args.sources, work / "daemon.stderr")
    results: dict[str, Any] = {}
    try:
        for consumer in args.consumers:
            args.consumer_now = consumer
            runs: dict[str, list[dict[str, Any]]] = {
                "embedded": [],
                "daemon": [],
                "embedded_tasks": [],
                "daemon_clients": [],
            }
            for repeat in range(args.repeat):
                plan = [
                    ("embedded", 1, 1, None),
                    ("daemon", 1, 1, socket_path),
                    ("embedded_tasks", 1, args.clients, None),
                    ("daemon_clients", args.clients, 1, socket_path),
                ]
                if repeat % 2:
                    plan = [plan[1], plan[0], plan[3], plan[2]]
                if args.clients < 1:
                    plan = [p for p in plan if p[0] in ("embedded", "daemon")]
                for side, processes, tasks, connect in plan:
                    figures = measure(
                        args,
                        processes=processes,
                        tasks=tasks,
                        connect=connect,
                        daemon=daemon if connect is not None else None,
                        files=files,
                    )
                    runs[side].append(figures)
                    extra = ""
                    if figures["daemon_cpu_seconds"] is not None:
                        extra = f", daemon CPU {figures['daemon_cpu_seconds']} s"
                    log(
                        f"{consumer} {side} #{repeat + 1}: {figures['pages']} items in "
                        f"{figures['seconds']:.3f} s = {figures['items_per_second']}/s, "
                        f"consumers' CPU {figures['consumer_cpu_seconds']} s{extra}"
                    )
            results[consumer] = summarise(runs, args.clients)
            log(
                f"{consumer}: daemon/embedded {results[consumer]['ratio']}, "
                f"{args.clients} clients / {args.clients} embedded tasks "
                f"{results[consumer]['clients_ratio_vs_embedded_tasks']}"
            )
    except BaseException:
        log(f"the daemon's log ends with:\n{(work / 'daemon.stderr').read_text()[-3000:]}")
        raise
    finally:
        stop_daemon(daemon)
    return {
        "files": len(files),
        "pages": total,
        "cached_pages_at_start": cached,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000, help="cached pages (one item each)")
    parser.add_argument("--files", type=int, default=16, help="files they are spread over")
    parser.add_argument("--clients", type=int, default=8, help="client processes at once (0: none)")
    parser.add_argument(
        "--consumers", type=lambda s: s.split(","), default=list(CONSUMERS), help="fetch,iter"
    )
    parser.add_argument("--batch", type=int, default=256, help="max_items of each fetch")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration")
    parser.add_argument("--sources", default="exact", help="daemon's and embedded sources")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the tree is made")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    # A worker process (internal).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--consumer", default="fetch", help=argparse.SUPPRESS)
    parser.add_argument("--connect", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    if set(args.consumers) - set(CONSUMERS):
        parser.error(f"--consumers: a list of {', '.join(CONSUMERS)}")
    if args.items < 1 or args.files < 1 or args.repeat < 1 or args.clients < 0 or args.batch < 1:
        parser.error("--items, --files, --repeat and --batch >= 1 and --clients >= 0, please")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="aioduet-daemon-items-", dir=args.dir))
    try:
        figures = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "daemon_items",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.dir),
        "parameters": {
            "items": args.items,
            "files": args.files,
            "clients": args.clients,
            "consumers": args.consumers,
            "batch": args.batch,
            "repeat": args.repeat,
            "sources": args.sources,
            "mask": "ADDED",
        },
        "tree": {k: figures[k] for k in ("files", "pages", "cached_pages_at_start")},
        "results": figures["results"],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
