"""Quartet on one machine: Dask tasks placed where their input is cached, against Dask's own.

Quartet (HotStorage'16) ran Hadoop and Spark jobs whose inputs overlap, on nodes that each
hold a replica of the data, and placed each task on a node that had its input in its page
cache. This benchmark simulates that cluster on one machine and runs the same job mix with
Dask's default placement and with ``aioduet.dask.cache_aware_map``, in the same run.

Method:

* **Replicas**: ``--workers`` directories ``replica-0`` ... of the same files (``file-0000``
  ..., ``--file-mib`` each, the same bytes in every replica) in a fresh directory under
  ``--dir``, as HDFS keeps replicas on different nodes; written, fsynced and dropped from the
  cache, and removed at the end unless ``--keep``.
* **Cluster**: a ``LocalCluster`` of ``--workers`` worker processes with one thread each. Each
  worker is moved into a memory cgroup of its own (``bench/_cgroups.py``) before it reads
  anything: its page cache is held near ``--cache-mib`` (by default two jobs' share of the
  input, ``2 * files-per-job * file-mib / workers``), as a node's memory would be, and a
  sampler thread moves the limit a few times a second after the worker's other memory.
* **Jobs**: ``--jobs`` jobs one after another (``--gap`` seconds apart), each of
  ``--files-per-job`` tasks; a task reads the whole of its file in its worker's replica.
  Job 0 reads fresh files; job j reads ``round(overlap * files-per-job)`` of job j-1's files
  and fresh ones (never read before in the configuration) for the rest, in a shuffled
  order. The same seeded choices serve both placements at a given overlap.
* **Placements**: ``default``: ``client.map`` (Dask decides; the workers run no aioduet
  unless ``--default-reporters``); ``cache_aware``: ``aioduet.dask.cache_aware_map``, with
  the residency reporters installed, the plan asked of the board just before (not timed)
  to count how many tasks ran where it said. ``--via daemon`` (the default): the reporters
  register with one ``aioduet daemon`` (``--sources``), started for the configuration;
  ``--via embedded``: each runs its own framework. On a real cluster a node's framework
  sees its own node's page-cache events; here every framework sees every worker's, so
  ``embedded`` does N times a node's work, and one daemon does the cluster's.
* **Before each configuration** (placement x overlap) every replica file is dropped from the
  cache; with the reporters on, the board must show nothing cached (bounded wait): both
  placements start cold. The placement that goes first alternates between overlaps.
* **Measures**: each task reads ``/proc/thread-self/io`` ``read_bytes`` before and after its
  read (what its thread made the disk fetch) and ``cachestat`` of its file just before. Cache
  hit rate = sum of (bytes read - device bytes) over sum of bytes read; the cachestat figure
  is a second estimate. Device bytes also from ``/sys/block/<disk>/stat`` around the
  configuration. Job completion time: wall time of map and gather per job; the total is
  their sum. CPU time over the configuration: the workers' (``os.times``) and the
  daemon's (``/proc/PID/stat``).

The JSON gives per configuration the figures, and per overlap the ratios cache-aware over
default and the goal (hit rate raised by >= 50% at 4 workers and overlap 0.5, with lower
completion time). It is not a test: it never fails because a machine is slow. Needs root
(memory cgroups; the exact set of sources). Progress goes to stderr, the JSON to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _cgroups import SECTOR, MemoryCgroup, disk_of, evict, sectors_read
from _common import binary_size, daemon_socket, log, machine, wait_listening, write_report

MIB = 1 << 20
PLACEMENTS = ("default", "cache_aware")
GOAL = {"workers": 4, "overlap": 0.5, "min_hit_rate_raise": 0.5}
BOARD_WAIT = 30.0  # seconds the board may take to show the cold cache
SAMPLE_PERIOD = 0.1  # seconds between two samples of the cgroups


# -- the tasks (run in the workers: cloudpickle sends them by value) ------------------------


def thread_read_bytes() -> int:
    # /proc/thread-self/io (Documentation/filesystems/proc.rst; thread-self since Linux 3.17):
    # read_bytes is what this thread made the block layer fetch, read-ahead included.
    with open("/proc/thread-self/io") as io:
        for line in io:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def read_file(path: Path) -> dict[str, Any]:
    """A task: read the whole of ``path`` (this worker's replica); what it read, from where."""
    from distributed import get_worker  # noqa: PLC0415 - in the worker, not at pickling

    from aioduet import _kernel  # noqa: PLC0415 - cachestat's wrapper

    buffer = bytearray(MIB)
    began = time.monotonic()
    with open(path, "rb", buffering=0) as data:
        size = os.fstat(data.fileno()).st_size
        cached = min(size, _kernel.cachestat(data.fileno()).cache * os.sysconf("SC_PAGE_SIZE"))
        before = thread_read_bytes()
        total = 0
        while count := data.readinto(buffer):
            total += count
        device = thread_read_bytes() - before
    return {
        "path": path.name,
        "worker": str(get_worker().name),
        "bytes": total,
        "device_bytes": device,
        "cachestat_bytes": cached,
        "seconds": round(time.monotonic() - began, 4),
    }


def read_default(relative: str, template: str) -> dict[str, Any]:
    """A task of the default placement: the worker's replica is ``template`` with its name."""
    from distributed import get_worker  # noqa: PLC0415 - in the worker, not at pickling

    root = Path(template.replace("{name}", str(get_worker().name)))
    return read_file(root / relative)


def warm_up() -> None:
    """Import in a worker what its first task would (not timed)."""
    from aioduet import _kernel  # noqa: F401, PLC0415 - the import is the point


def cpu_seconds() -> float:
    """This process's CPU time, every thread's, user and system."""
    times = os.times()
    return times.user + times.system


# -- the dataset and the job mix -----------------------------------------------------------


def file_name(number: int) -> str:
    return f"file-{number:04d}"


def make_replicas(work: Path, replicas: int, files: int, size: int, seed: int) -> list[Path]:
    """``replicas`` directories of the same ``files`` files; synced and dropped from the cache.

    Each file's bytes are made once and written to every replica: a distinct header per MiB,
    so that no two MiB of a replica are equal."""
    rng = random.Random(seed)
    pool = rng.randbytes(16 * MIB)
    roots = [work / f"replica-{index}" for index in range(replicas)]
    for root in roots:
        root.mkdir()
    for number in range(files):
        outputs = [open(root / file_name(number), "wb") for root in roots]  # noqa: SIM115 - closed below
        try:
            for chunk in range(-(-size // MIB)):
                header = f"{number}:{chunk}:".encode().ljust(32, b".")
                start = rng.randrange(len(pool) - MIB)
                block = (header + pool[start : start + MIB - len(header)])[: size - chunk * MIB]
                for output in outputs:
                    output.write(block)
            for output in outputs:
                output.flush()
                os.fsync(output.fileno())
                os.posix_fadvise(output.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            for output in outputs:
                output.close()
        if number % 16 == 15:
            log(f"replicas: {number + 1} / {files} files of {size / MIB:g} MiB, x{replicas}")
    return roots


def files_needed(per_job: int, jobs: int, overlap: float) -> int:
    return per_job + (jobs - 1) * (per_job - round(overlap * per_job))


def plan_jobs(args: argparse.Namespace, overlap: float, run: int) -> list[list[str]]:
    """The job mix at ``overlap``: per job, its files (relative paths), in a shuffled order."""
    rng = random.Random(f"{args.seed}:{overlap}:{run}")
    fresh = list(range(args.dataset_files))
    rng.shuffle(fresh)
    kept = round(overlap * args.files_per_job)
    jobs: list[list[str]] = []
    for index in range(args.jobs):
        reused = rng.sample(jobs[-1], kept) if index else []
        chosen = reused + [file_name(fresh.pop()) for _ in range(args.files_per_job - len(reused))]
        rng.shuffle(chosen)
        jobs.append(chosen)
    return jobs


# -- the cluster ---------------------------------------------------------------------------


class Sampler:
    """A thread that samples the workers' cgroups (and moves their limits) until stopped."""

    def __init__(self, groups: list[MemoryCgroup]) -> None:
        self.groups = groups
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cgroup sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            for group in self.groups:
                with contextlib.suppress(OSError, ValueError):  # a worker that just left
                    group.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Daemon:
    """One aioduet daemon that every worker's reporter registers with (``--via daemon``).

    On a real cluster each node's framework sees the page-cache events of its node only; on
    one machine a framework per worker would see every worker's (``--via embedded``: N times
    the work of a node's). One daemon sees each event once: the whole cluster's work."""

    def __init__(self, work: Path, sources: str) -> None:
        self.socket = daemon_socket(work)
        self.socket.unlink(missing_ok=True)
        self.log = open(work / "daemon.stderr", "w+")  # noqa: SIM115 - closed by stop()
        argv = [sys.executable, "-m", "aioduet", "daemon", "--socket", str(self.socket)]
        self.process = subprocess.Popen(
            [*argv, "--sources", sources],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        try:
            wait_listening(self.process, self.socket, self._log_tail)
        except BaseException:
            self.stop()
            raise

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def cpu_seconds(self) -> float:
        # /proc/PID/stat (proc(5)): utime and stime, fields 14 and 15, in clock ticks; the
        # command (field 2) may hold spaces, so count from the closing parenthesis.
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Cluster:
    """The LocalCluster, its workers' cgroups, and the reporters turned on and off."""

    def __init__(self, args: argparse.Namespace, template: str) -> None:
        from distributed import Client, LocalCluster  # noqa: PLC0415 - an optional dependency

        self.args, self.template = args, template
        self.groups: list[MemoryCgroup] = []
        self.group_names: list[str] = []
        self.sampler: Sampler | None = None
        self.reporters = False
        self.installed = False
        self.daemon: Daemon | None = None
        began = time.monotonic()
        self.cluster = LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        )  # type: ignore[no-untyped-call]  # distributed is untyped
        try:
            self.client = Client(self.cluster)  # type: ignore[no-untyped-call]  # distributed is untyped
            self.client.wait_for_workers(args.workers, timeout=120)
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
            self.names = {address: str(info["name"]) for address, info in workers.items()}
            pids: dict[str, int] = self.client.run(os.getpid)
            for address, pid in sorted(pids.items(), key=lambda item: self.names[item[0]]):
                group = MemoryCgroup(
                    args.cache,
                    args.headroom,
                    f"aioduet-quartet-{os.getpid()}-worker-{self.names[address]}",
                )
                self.groups.append(group)
                self.group_names.append(self.names[address])
                group.add(pid)
            self.sampler = Sampler(self.groups)
            self.client.run(warm_up)
        except BaseException:
            self.close()
            raise
        self.start_seconds = round(time.monotonic() - began, 2)

    def set_reporters(self, on: bool) -> float:
        """Install or remove the residency reporters; the seconds it took."""
        import aioduet.dask  # noqa: PLC0415 - an optional dependency

        began = time.monotonic()
        if on and not self.reporters:
            if self.args.via == "daemon":
                self.daemon = Daemon(self.args.work, self.args.sources)
            settings: dict[str, Any] = {
                "sources": self.args.sources,
                "interval": self.args.interval,
                "daemon": str(self.daemon.socket) if self.daemon is not None else None,
            }
            if not self.installed:
                aioduet.dask.install(self.client, self.template, **settings)
                self.installed = True
            else:
                reporter = aioduet.dask.ResidencyReporter(self.template, **settings)
                self.client.register_plugin(reporter)
        elif not on and self.reporters:
            self.client.unregister_worker_plugin(aioduet.dask.ResidencyReporter.name)  # type: ignore[no-untyped-call]  # distributed is untyped
            if self.daemon is not None:
                self.daemon.stop()
                self.daemon = None
        self.reporters = on
        return round(time.monotonic() - began, 2)

    def wait_board_cold(self) -> tuple[int, float]:
        """Wait until every worker's new reporter reported nothing cached (bounded).

        Returns the cached bytes the board still shows and the seconds waited."""
        import aioduet.dask  # noqa: PLC0415 - an optional dependency

        name = aioduet.dask.ResidencyReporter.name

        def reports(dask_worker: Any) -> int:  # on each worker: reports its reporter sent
            return int(getattr(dask_worker.plugins.get(name), "reports", 0))

        began = time.monotonic()
        cached = -1
        while time.monotonic() - began < BOARD_WAIT:
            board = aioduet.dask.board(self.client)
            cached = sum(summary.cached_bytes for summary in board.values())
            if (
                cached == 0
                and set(board) == set(self.names)
                and all(self.client.run(reports).values())
            ):
                break
            time.sleep(0.1)
        else:
            log(f"warning: the board still shows {cached} cached bytes after {BOARD_WAIT:g} s")
        return cached, round(time.monotonic() - began, 2)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the workers (all together) and of the daemon (0 without)."""
        workers = float(sum(self.client.run(cpu_seconds).values()))
        return workers, self.daemon.cpu_seconds() if self.daemon is not None else 0.0

    def close(self) -> None:
        """Close the client and the cluster, then stop sampling and remove the cgroups."""
        with contextlib.suppress(Exception):  # AttributeError: it was not made
            self.client.close(timeout=30)  # type: ignore[no-untyped-call]  # distributed is untyped
        with contextlib.suppress(Exception):
            self.cluster.close(timeout=30)
        if self.daemon is not None:
            self.daemon.stop()
        if self.sampler is not None:
            self.sampler.stop()
        for group in self.groups:
            group.remove()


# -- a configuration -----------------------------------------------------------------------


def run_job(
    cluster: Cluster, placement: str, paths: list[str], timeout: float
) -> tuple[float, list[dict[str, Any]]]:
    """One job: map and gather; its wall time and its tasks' records (with the plan's pick)."""
    from distributed import wait  # noqa: PLC0415 - an optional dependency

    import aioduet.dask  # noqa: PLC0415 - an optional dependency

    client = cluster.client
    planned: list[str | None] = [None] * len(paths)
    if placement == "cache_aware":
        planned = aioduet.dask.plan(client, paths)
    began = time.monotonic()
    if placement == "cache_aware":
        futures = aioduet.dask.cache_aware_map(client, read_file, paths, pure=False)
    else:
        futures = client.map(read_default, paths, template=cluster.template, pure=False)
    wait(futures, timeout=timeout)  # type: ignore[no-untyped-call]  # distributed is untyped
    tasks: list[dict[str, Any]] = client.gather(futures)  # type: ignore[no-untyped-call]  # distributed is untyped
    seconds = time.monotonic() - began
    del futures
    for task, address in zip(tasks, planned, strict=True):
        task["planned"] = cluster.names.get(address) if address is not None else None
    return seconds, tasks


TASK_KEYS = ("path", "worker", "planned", "bytes", "device_bytes", "cachestat_bytes", "seconds")
CGROUP_KEYS = ("peak_cache_bytes", "mean_cache_bytes", "peak_other_bytes", "samples")


def tally(tasks: list[dict[str, Any]], *, records: bool = False) -> dict[str, Any]:
    """Bytes read, served from the cache, fetched from the device; where the tasks ran; and
    with ``records`` each task's record."""
    read = sum(task["bytes"] for task in tasks)
    hits = sum(max(0, task["bytes"] - task["device_bytes"]) for task in tasks)
    cachestat_hits = sum(min(task["cachestat_bytes"], task["bytes"]) for task in tasks)
    planned = [task for task in tasks if task["planned"] is not None]
    return {
        "tasks": len(tasks),
        "bytes_read": read,
        "hit_bytes": hits,
        "hit_rate": round(hits / read, 4) if read else None,
        "cachestat_hit_bytes": cachestat_hits,
        "cachestat_hit_rate": round(cachestat_hits / read, 4) if read else None,
        "tasks_device_bytes": sum(task["device_bytes"] for task in tasks),
        "tasks_per_worker": dict(sorted(Counter(task["worker"] for task in tasks).items())),
        "planned_tasks": len(planned),
        "placed_as_planned": sum(task["worker"] == task["planned"] for task in planned),
    } | ({"records": [{key: task[key] for key in TASK_KEYS} for task in tasks]} if records else {})


def run_configuration(
    cluster: Cluster,
    args: argparse.Namespace,
    *,
    placement: str,
    jobs: list[list[str]],
    files: list[Path],
    disk: Path,
) -> dict[str, Any]:
    """One placement over one job mix, from a cold cache: the figures."""
    left = evict(files)
    reporters_seconds = cluster.set_reporters(placement == "cache_aware" or args.default_reporters)
    board_cached, board_seconds = cluster.wait_board_cold() if cluster.reporters else (None, 0.0)
    samples = [len(group.caches) for group in cluster.groups]
    workers_cpu0, daemon_cpu0 = cluster.cpu()
    sectors0 = sectors_read(disk)
    job_seconds: list[float] = []
    job_tasks: list[list[dict[str, Any]]] = []
    for index, paths in enumerate(jobs):
        if index:
            time.sleep(args.gap)  # the board follows the kernel by up to one interval
        seconds, tasks = run_job(cluster, placement, paths, args.timeout)
        job_seconds.append(round(seconds, 3))
        job_tasks.append(tasks)
    device = (sectors_read(disk) - sectors0) * SECTOR
    workers_cpu, daemon_cpu = cluster.cpu()
    workers_cpu, daemon_cpu = workers_cpu - workers_cpu0, daemon_cpu - daemon_cpu0
    every = [task for tasks in job_tasks for task in tasks]
    figures: dict[str, Any] = {
        "completion_seconds": round(sum(job_seconds), 3),
        "job_seconds": job_seconds,
        **tally(every),
        "device_read_bytes": device,
        "cpu_seconds": round(workers_cpu + daemon_cpu, 2),
        "worker_cpu_seconds": round(workers_cpu, 2),
        "daemon_cpu_seconds": round(daemon_cpu, 2),
        "cached_before": round(left, 5),
        "reporters": cluster.reporters,
        "reporters_seconds": reporters_seconds,
        "board_cached_bytes_before": board_cached,
        "board_wait_seconds": board_seconds,
        "cgroups": {
            name: {key: group.figures(since=since)[key] for key in CGROUP_KEYS}
            for name, group, since in zip(cluster.group_names, cluster.groups, samples, strict=True)
        },
        "job_hit_rates": [tally(tasks)["hit_rate"] for tasks in job_tasks],
    }
    if args.detail:
        figures["jobs"] = [
            {"seconds": seconds, **tally(tasks, records=True)}
            for seconds, tasks in zip(job_seconds, job_tasks, strict=True)
        ]
    planned = figures["planned_tasks"]
    log(
        f"  {placement}: hit rate {figures['hit_rate']} (cachestat "
        f"{figures['cachestat_hit_rate']}), device {device / MIB:.0f} MiB, "
        f"{figures['completion_seconds']:.2f} s, CPU {figures['cpu_seconds']} s"
        + (
            f", {figures['placed_as_planned']} / {planned} tasks where planned"
            if placement == "cache_aware"
            else ""
        )
    )
    return figures


# -- the run -------------------------------------------------------------------------------


def ratio(top: float | None, bottom: float | None) -> float | None:
    return round(top / bottom, 4) if top is not None and bottom else None


def summarise(runs: dict[str, list[dict[str, Any]]], reread: float) -> dict[str, Any]:
    """Medians per placement over the repeats, and the ratios cache-aware over default."""

    def median(placement: str, key: str) -> float | None:
        values = [run[key] for run in runs[placement] if run[key] is not None]
        return float(statistics.median(values)) if values else None

    summary: dict[str, Any] = {"reread_fraction": round(reread, 4)}
    keys = (
        "hit_rate",
        "cachestat_hit_rate",
        "device_read_bytes",
        "tasks_device_bytes",
        "completion_seconds",
        "cpu_seconds",
    )
    for placement in PLACEMENTS:
        summary[placement] = {key: median(placement, key) for key in keys}
    default, aware = summary["default"], summary["cache_aware"]
    for name, key in (
        ("hit_rate_raise", "hit_rate"),
        ("cachestat_hit_rate_raise", "cachestat_hit_rate"),
    ):
        both = ratio(aware[key], default[key])
        summary[name] = round(both - 1, 4) if both is not None else None
    summary["device_bytes_ratio"] = ratio(aware["device_read_bytes"], default["device_read_bytes"])
    summary["completion_ratio"] = ratio(aware["completion_seconds"], default["completion_seconds"])
    summary["cpu_ratio"] = ratio(aware["cpu_seconds"], default["cpu_seconds"])
    summary["runs"] = runs
    return summary


def goal(args: argparse.Namespace, overlaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Whether cache-aware placement raised the hit rate by >= 50% at 4 workers and overlap
    0.5 with a lower completion time (None: this run does not measure that point)."""
    point = overlaps.get(f"{GOAL['overlap']:g}")
    met: bool | None = None
    raise_, completion = None, None
    if point is not None:
        raise_, completion = point["hit_rate_raise"], point["completion_ratio"]
    if point is not None and args.workers == GOAL["workers"]:
        met = (
            raise_ is not None
            and raise_ >= GOAL["min_hit_rate_raise"]
            and completion is not None
            and completion < 1
        )
    return {**GOAL, "hit_rate_raise": raise_, "completion_ratio": completion, "met": met}


def measure(args: argparse.Namespace, roots: list[Path], template: str) -> dict[str, Any]:
    files = sorted(path for root in roots for path in root.iterdir())
    disk = disk_of(roots[0])
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        f"{p:g}": {placement: [] for placement in PLACEMENTS} for p in args.overlaps
    }
    log(f"starting {args.workers} workers")
    cluster = Cluster(args, template)
    try:
        log(f"cluster up in {cluster.start_seconds} s; workers in their cgroups")
        turn = 0
        for run in range(args.repeat):
            for overlap in args.overlaps:
                jobs = plan_jobs(args, overlap, run)
                order = PLACEMENTS if turn % 2 == 0 else PLACEMENTS[::-1]
                turn += 1
                log(f"overlap {overlap:g}, run {run + 1} / {args.repeat}:")
                for placement in order:
                    figures = run_configuration(
                        cluster, args, placement=placement, jobs=jobs, files=files, disk=disk
                    )
                    runs[f"{overlap:g}"][placement].append(figures)
        cluster_start, version = cluster.start_seconds, cluster.groups[0].version
    finally:
        cluster.close()
    overlaps: dict[str, dict[str, Any]] = {}
    for overlap in args.overlaps:
        kept = round(overlap * args.files_per_job)
        reread = (args.jobs - 1) * kept / (args.jobs * args.files_per_job)
        summary = summarise(runs[f"{overlap:g}"], reread)
        overlaps[f"{overlap:g}"] = summary
        log(
            f"overlap {overlap:g}: hit rate {summary['default']['hit_rate']} -> "
            f"{summary['cache_aware']['hit_rate']} (raise {summary['hit_rate_raise']}), "
            f"device bytes x{summary['device_bytes_ratio']}, "
            f"completion x{summary['completion_ratio']}"
        )
    return {
        "disk": disk.name,
        "cluster_start_seconds": cluster_start,
        "cgroup_version": version,
        "overlaps": overlaps,
    }


def parse_overlaps(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"overlaps must be numbers, not {text!r}") from None
    if not values or any(not 0 <= value <= 1 for value in values):
        raise argparse.ArgumentTypeError("overlaps must be between 0 and 1")
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4, help="worker processes (replicas)")
    parser.add_argument("--files-per-job", type=int, default=16, help="tasks (files) per job")
    parser.add_argument("--jobs", type=int, default=6, help="jobs per configuration")
    parser.add_argument("--file-mib", type=float, default=32, help="MiB per file")
    parser.add_argument(
        "--overlaps",
        type=parse_overlaps,
        default="0,0.25,0.5,0.75,1",
        help="fractions of a job's files that the job before read",
    )
    parser.add_argument(
        "--cache-mib",
        type=float,
        help="page cache per worker (default: two jobs' share, 2 x files x MiB / workers)",
    )
    parser.add_argument(
        "--headroom",
        type=binary_size,
        default="8M",
        help="slack per worker above its cache and its memory that is not cache",
    )
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between two jobs")
    parser.add_argument("--repeat", type=int, default=5, help="runs per overlap and placement")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the job mix")
    parser.add_argument(
        "--sources",
        choices=("auto", "exact", "scan"),
        default="exact",
        help="the reporters' aioduet sources",
    )
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between two residency reports"
    )
    parser.add_argument(
        "--via",
        choices=("embedded", "daemon"),
        default="daemon",
        help="the reporters register with one aioduet daemon, or run a framework each",
    )
    parser.add_argument(
        "--default-reporters",
        action="store_true",
        help="run the residency reporters during the default placement too",
    )
    parser.add_argument(
        "--detail", action="store_true", help="add each job's figures and tasks to the JSON"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one job may take")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the data is made")
    parser.add_argument("--keep", action="store_true", help="leave the replicas in place")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.files_per_job < 1 or args.jobs < 1 or args.repeat < 1:
        parser.error("--workers, --files-per-job, --jobs and --repeat must be at least 1")
    if args.file_mib <= 0 or args.gap < 0 or args.interval <= 0:
        parser.error("--file-mib and --interval must be positive, --gap not negative")
    if os.geteuid() != 0:
        sys.exit("quartet: needs root (memory cgroups, the exact sources)")
    if args.sources == "exact" and not Path("/sys/kernel/tracing/trace_pipe").exists():
        sys.exit("quartet: tracefs is not mounted: mount -t tracefs nodev /sys/kernel/tracing")
    args.file_bytes = int(args.file_mib * MIB)
    share = args.files_per_job * args.file_bytes / args.workers
    args.cache = int(args.cache_mib * MIB) if args.cache_mib else int(2 * share)
    args.dataset_files = max(files_needed(args.files_per_job, args.jobs, p) for p in args.overlaps)
    started, load_before = time.monotonic(), os.getloadavg()[0]
    work = args.work = Path(tempfile.mkdtemp(prefix="aioduet-quartet-", dir=args.dir))
    try:
        log(
            f"writing {args.dataset_files} files of {args.file_mib:g} MiB in {args.workers} "
            f"replicas under {work}"
        )
        began = time.monotonic()
        roots = make_replicas(work, args.workers, args.dataset_files, args.file_bytes, args.seed)
        log(f"replicas written in {time.monotonic() - began:.1f} s")
        results = measure(args, roots, str(work / "replica-{name}"))
    finally:
        if args.keep:
            log(f"replicas kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    import dask  # noqa: PLC0415 - an optional dependency

    report = {
        "benchmark": "quartet",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(args.dir),
            "distributed": importlib.metadata.version("distributed"),
            "disk": results["disk"],
            # The load at the start of the run as well as at its end.
            "load_average_1min": {
                "start": round(load_before, 2),
                "end": round(os.getloadavg()[0], 2),
            },
        },
        "parameters": {
            "workers": args.workers,
            "files_per_job": args.files_per_job,
            "jobs": args.jobs,
            "file_bytes": args.file_bytes,
            "overlaps": args.overlaps,
            "cache_bytes_per_worker": args.cache,
            "headroom_bytes": args.headroom,
            "gap_seconds": args.gap,
            "repeat": args.repeat,
            "seed": args.seed,
            "sources": args.sources,
            "interval": args.interval,
            "via": args.via,
            "default_reporters": args.default_reporters,
            "detail": args.detail,
            "cgroup_version": results["cgroup_version"],
            "work_stealing": dask.config.get("distributed.scheduler.work-stealing"),
        },
        "dataset": {
            "files": args.dataset_files,
            "replicas": args.workers,
            "bytes_per_replica": args.dataset_files * args.file_bytes,
        },
        "cluster_start_seconds": results["cluster_start_seconds"],
        "overlaps": results["overlaps"],
        "goal": goal(args, results["overlaps"]),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
