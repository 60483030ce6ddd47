"""Piggy-backing maintenance tools: bytes read from the device with and without aioduet.

Duet's headline result: several maintenance tools that scan the same data together do a
fraction of the I/O, because each processes first what another has just brought into the page
cache. This benchmark runs the tools of ``examples/`` (``backup.py`` to ``/dev/null``,
``scrub.py`` verifying a manifest made beforehand, ``index.py``) over a dataset much larger
than the page cache they may use, as concurrent processes, once with ``--no-duet`` (each in
its natural order: backup by path, scrub on-disk (FIEMAP), index by inode) and once with
aioduet (each registers an EXISTS task and iterates ``cached_first``: the most-cached
not-done file next).

Method, per configuration (a scenario, without or with aioduet):

* The dataset (``--size`` of mixed file sizes, made in a fresh directory under ``--dir`` from
  ``--seed``, or reused with ``--dataset``) is synced and dropped from the page cache with
  ``POSIX_FADV_DONTNEED`` per file; ``cachestat`` checks that little is left.
* A fresh child of this process's memory cgroup (v1 ``memory.limit_in_bytes`` with the OOM
  killer off, or v2 ``memory.high`` where the memory controller is on the unified
  hierarchy) holds the tools' page cache to ``--memory-fraction`` of the dataset: ten times
  a second its limit is set to that, plus the memory charged to it that is not page cache
  (the interpreters, the framework), plus ``--headroom`` per tool. Each tool starts through
  ``sh``, which writes its own pid into ``cgroup.procs`` before it execs Python: no read
  escapes the limit.
* Bytes read from the device: the sectors-read field of ``/sys/block/<disk>/stat`` (x 512)
  around the configuration, and each tool's ``read_bytes`` (``/proc/self/io``) from its JSON.
  Wall time: from the first start to the last exit.
* The cgroup is emptied (v1 ``memory.force_empty``) and removed when the tools have exited.

Scenarios: ``three`` (backup, scrub, index started together), ``two`` (backup and scrub),
``staggered`` (the three tools, each started ``--stagger`` seconds after the one before).
The JSON gives per configuration the figures and per scenario the ratios with over without
(``read_ratio``: device bytes, goal <= 0.40 for three tools; ``wall_ratio``). It is not a
test: it never fails because a machine is slow. Root is needed (cgroups, dropping the cache of
files one does not own). Progress goes to stderr, the JSON object to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _cgroups import SECTOR, MemoryCgroup, disk_of, evict, sectors_read
from _common import binary_size, daemon_socket, log, machine, wait_listening, write_report

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20
SCENARIOS = {
    "three": ("backup", "scrub", "index"),
    "two": ("backup", "scrub"),
    "staggered": ("backup", "scrub", "index"),
}
# The dataset's shape: share of the bytes, file sizes (min, max), files per directory.
# Many small files, some medium, a few large, as a home directory or a source tree holds.
SHAPE = (
    ("small", 0.15, (1 << 10, 64 << 10)),
    ("medium", 0.40, (256 << 10, 8 << 20)),
    ("large", 0.45, (32 << 20, 192 << 20)),
)
FILES_PER_DIR = 100
# --via: the name of each side in the JSON (without aioduet is always run).
VIA = {"embedded": "with", "daemon": "daemon"}


def parse_size(text: str) -> int:
    """``16M``, ``3G``: binary units; at least 1M."""
    value = binary_size(text)
    if value < CHUNK:
        raise argparse.ArgumentTypeError(f"size must be at least 1M, not {text!r}")
    return value


# -- the dataset ---------------------------------------------------------------------------


def plan_dataset(size: int, seed: int) -> list[int]:
    """File sizes adding up to about ``size`` bytes, in a seeded random order."""
    rng = random.Random(seed)
    sizes: list[int] = []
    carried = 0
    for _, share, (low, largest) in reversed(SHAPE):  # what large files cannot hold goes down
        budget = int(size * share) + carried
        high = max(low, min(largest, budget // 4))  # a small dataset still gets several
        while budget >= high:
            one = int(low * (high / low) ** rng.random())  # log-uniform
            sizes.append(one)
            budget -= one
        carried = budget
    if carried:
        sizes.append(carried)
    rng.shuffle(sizes)
    return sizes


def make_dataset(path: Path, size: int, seed: int) -> None:
    """Write the files of :func:`plan_dataset` under ``path``.

    Files are created in one random order and filled in another, with a sync every 64 MiB,
    so that path order, inode order and on-disk order all differ, as in a tree that grew
    over time.
    """
    rng = random.Random(seed + 1)
    sizes = plan_dataset(size, seed)
    names = [
        path / f"d{i // FILES_PER_DIR:03d}" / f"f{i % FILES_PER_DIR:03d}.dat"
        for i in range(len(sizes))
    ]
    for directory in {name.parent for name in names}:
        directory.mkdir(parents=True)
    create = list(range(len(sizes)))
    rng.shuffle(create)
    for i in create:
        names[i].touch()
    fill = list(range(len(sizes)))
    rng.shuffle(fill)
    pool = rng.randbytes(16 * CHUNK)
    written = unsynced = 0
    for n, i in enumerate(fill):
        with open(names[i], "r+b") as out:
            left = sizes[i]
            chunk = 0
            while left > 0:
                # A distinct header per chunk: no two chunks of the dataset are equal.
                header = f"{i}:{chunk}:".encode().ljust(32, b".")
                start = rng.randrange(len(pool) - CHUNK)
                block = (header + pool[start : start + CHUNK - len(header)])[:left]
                out.write(block)
                left -= len(block)
                chunk += 1
        written += sizes[i]
        unsynced += sizes[i]
        if unsynced >= 64 * CHUNK:
            os.sync()
            unsynced = 0
        if n % 200 == 0:
            log(f"dataset: {written >> 20} / {size >> 20} MiB, {n} / {len(sizes)} files")
    os.sync()


def dataset_files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# -- the tools -----------------------------------------------------------------------------


def tool_command(
    tool: str, tools_dir: Path, dataset: Path, work: Path, *, side: str, sources: str
) -> list[str]:
    """The tool's command line: ``side`` is without, with (embedded) or daemon."""
    script = str(tools_dir / f"{tool}.py")
    if tool == "backup":
        argv = [sys.executable, script, str(dataset), "/dev/null"]
    elif tool == "scrub":
        argv = [sys.executable, script, str(dataset), "--manifest", str(work / "manifest")]
    else:
        argv = [sys.executable, script, str(dataset), "--out", str(work / "index.out")]
    if side == "without":
        return [*argv, "--no-duet"]
    if side == "daemon":
        return [*argv, "--connect", str(daemon_socket(work))]
    return [*argv, "--sources", sources]


class Daemon:
    """The aioduet daemon serving the tools of one configuration (``--via daemon``).

    It runs in the tools' cgroup: its memory counts as theirs does when each tool runs its
    own framework, and so would any page cache it brought in (it reads no file data).
    """

    def __init__(self, group: MemoryCgroup, work: Path, sources: str) -> None:
        began = time.monotonic()
        self.socket = daemon_socket(work)
        self.socket.unlink(missing_ok=True)
        self.log = open(work / "daemon.stderr", "w+")  # noqa: SIM115 - closed by kill()
        argv = [sys.executable, "-m", "aioduet", "daemon", "--socket", str(self.socket)]
        self.process = subprocess.Popen(
            group.command([*argv, "--sources", sources]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            text=True,
        )
        try:
            wait_listening(self.process, self.socket, self._log_tail, group.sample)
        except BaseException:
            self.kill()
            raise
        self.start_seconds = round(time.monotonic() - began, 2)

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self) -> dict[str, Any]:
        """SIGTERM; its CPU time (``wait4``), peak memory and bytes read from storage."""
        read = 0
        with contextlib.suppress(OSError), open(f"/proc/{self.process.pid}/io") as io:
            for line in io:
                if line.startswith("read_bytes:"):
                    read = int(line.split()[1])
        self.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        usage = reap(self.process)
        while usage is None and self.process.returncode is None:
            if time.monotonic() > deadline:
                self.process.kill()
            time.sleep(0.05)
            usage = reap(self.process)
        return {
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2) if usage else None,
            "max_rss_bytes": usage.ru_maxrss * 1024 if usage else None,
            "read_bytes": read,
            "start_seconds": self.start_seconds,
            "returncode": self.process.returncode,
        }

    def kill(self) -> None:
        if self.process.returncode is None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def run_tool(argv: list[str], label: str) -> dict[str, Any]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{label} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def reap(process: subprocess.Popen[str]) -> resource.struct_rusage | None:
    """The CPU time of ``process`` if it has just exited (``Popen.poll`` would lose it)."""
    if process.returncode is not None:
        return None
    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    if pid == 0:
        return None
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage


def run_tools(
    args: argparse.Namespace,
    scenario: str,
    *,
    side: str,
    group: MemoryCgroup,
    work: Path,
    processes: dict[str, subprocess.Popen[str]],
    logs: dict[str, Any],
) -> tuple[dict[str, dict[str, float]], float]:
    """Start the scenario's tools (staggered or not), sample the cgroup until all exited.

    Returns each tool's start, end and CPU time, and the wall time."""
    tools = SCENARIOS[scenario]
    stagger = args.stagger if scenario == "staggered" else 0.0
    timeline: dict[str, dict[str, float]] = {}
    started = time.monotonic()
    pending = list(tools)
    while pending or any(p.returncode is None for p in processes.values()):
        now = time.monotonic() - started
        while pending and now >= stagger * len(processes):
            tool = pending.pop(0)
            argv = tool_command(
                tool, args.tools, args.dataset_path, work, side=side, sources=args.sources
            )
            logs[tool] = open(work / f"{tool}.stderr", "w+")  # noqa: SIM115 - closed by the caller
            processes[tool] = subprocess.Popen(
                group.command(argv), stdout=subprocess.PIPE, stderr=logs[tool], text=True
            )
            timeline[tool] = {"start": round(now, 2)}
        for tool, process in processes.items():
            usage = reap(process)
            if usage is not None:
                timeline[tool]["end"] = round(time.monotonic() - started, 2)
                timeline[tool]["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
        group.sample()
        if now > args.timeout:
            raise RuntimeError(f"{scenario} took more than {args.timeout} s")
        time.sleep(0.1)
    return timeline, time.monotonic() - started


def run_configuration(
    args: argparse.Namespace,
    scenario: str,
    *,
    side: str,
    files: list[Path],
    dataset_bytes: int,
    work: Path,
    disk: Path,
) -> dict[str, Any]:
    """One scenario, one side (without, with: embedded, daemon): the figures."""
    tools = SCENARIOS[scenario]
    left = evict(files)
    budget = int(args.memory_fraction * dataset_bytes)
    # Reclaimable cache absorbs a tool's growth between two samples; with a tiny budget
    # (a smoke run) reads would fail with ENOMEM instead: give at least 64 MiB per tool.
    group = MemoryCgroup(
        budget,
        max(args.headroom * len(tools), (64 << 20) * len(tools) - budget),
        f"aioduet-piggyback-{os.getpid()}-{scenario}-{side}",
    )
    daemon: Daemon | None = None
    daemon_figures: dict[str, Any] | None = None
    processes: dict[str, subprocess.Popen[str]] = {}
    logs: dict[str, Any] = {}
    try:
        sectors0 = sectors_read(disk)
        if side == "daemon":  # started before the clock, its CPU time counted in full
            daemon = Daemon(group, work, args.sources)
        timeline, wall = run_tools(
            args, scenario, side=side, group=group, work=work, processes=processes, logs=logs
        )
        if daemon is not None:
            daemon_figures = daemon.stop()
        device = (sectors_read(disk) - sectors0) * SECTOR
        memory = group.figures()
        results: dict[str, Any] = {}
        for tool, process in processes.items():
            out, _ = process.communicate()
            logs[tool].seek(0)
            if process.returncode != 0:
                detail = logs[tool].read().strip()[-2000:]
                raise RuntimeError(f"{tool} failed ({process.returncode}): {detail}")
            results[tool] = json.loads(out.strip().splitlines()[-1])
            results[tool].update(timeline[tool])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        if daemon is not None:
            daemon.kill()
        for handle in logs.values():
            handle.close()
        group.remove()
    tools_read = sum(r["read_bytes"] for r in results.values())
    tools_cpu = round(sum(r["cpu_seconds"] for r in results.values()), 2)
    daemon_cpu = (daemon_figures or {}).get("cpu_seconds") or 0.0
    figures = {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(tools_cpu + daemon_cpu, 2),  # the daemon's included
        "tools_cpu_seconds": tools_cpu,
        "device_read_bytes": device,
        "tools_read_bytes": tools_read,
        "device_reads_per_dataset": round(device / dataset_bytes, 3),
        "cached_before": round(left, 5),
        "cgroup": memory,
        "tools": results,
    }
    if daemon_figures is not None:
        figures["daemon"] = daemon_figures
    label = {"without": "without aioduet", "with": "with aioduet", "daemon": "with the daemon"}
    log(
        f"{scenario} {label[side]}: {wall:.1f} s, CPU {figures['cpu_seconds']} s, "
        f"{device / (1 << 20):.0f} MiB from the device "
        f"({device / dataset_bytes:.2f}x the dataset), tools {tools_read / (1 << 20):.0f} MiB, "
        f"cache {memory['mean_cache_bytes'] >> 20} MiB on average"
    )
    return figures


def summarise(runs: dict[str, list[dict[str, Any]]], goal: float | None) -> dict[str, Any]:
    """Medians per side and the ratios: ``with`` (embedded) and ``daemon`` over ``without``,
    and, when both ran, the daemon's over the embedded frameworks' (``daemon_vs_embedded``)."""
    sides = [side for side in ("without", "with", "daemon") if runs.get(side)]

    def median(side: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[side]))

    def ratio(top: float, bottom: float) -> float | None:
        return round(top / bottom, 4) if bottom else None

    summary: dict[str, Any] = {}
    for key in (
        "device_read_bytes",
        "tools_read_bytes",
        "wall_seconds",
        "cpu_seconds",
        "tools_cpu_seconds",
    ):
        summary[key] = {side: median(side, key) for side in sides}
    for prefix, side in (("", "with"), ("daemon_", "daemon")):
        if side not in sides:
            continue
        for name, key in (
            ("read_ratio", "device_read_bytes"),
            ("tools_read_ratio", "tools_read_bytes"),
            ("wall_ratio", "wall_seconds"),
            ("cpu_ratio", "cpu_seconds"),
        ):
            summary[prefix + name] = ratio(summary[key][side], summary[key]["without"])
    if "with" in sides and "daemon" in sides:
        summary["daemon_vs_embedded"] = {
            key: ratio(summary[key]["daemon"], summary[key]["with"])
            for key in ("device_read_bytes", "wall_seconds", "cpu_seconds")
        }
    summary["goal_read_ratio"] = goal
    summary["runs"] = runs
    return summary


def measure(args: argparse.Namespace, files: list[Path], work: Path) -> dict[str, Any]:
    dataset_bytes = sum(p.stat().st_size for p in files)
    disk = disk_of(args.dataset_path)
    log(f"scrub --create: the manifest of {len(files)} files (not measured)")
    run_tool(
        [
            sys.executable,
            str(args.tools / "scrub.py"),
            str(args.dataset_path),
            "--manifest",
            str(work / "manifest"),
            "--create",
            "--no-duet",
        ],
        "scrub --create",
    )
    results: dict[str, Any] = {}
    for scenario in args.scenarios:
        sides = ["without", *(VIA[via] for via in args.via)]
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for run in range(args.repeat):
            order = sides[run % len(sides) :] + sides[: run % len(sides)]  # who goes first turns
            for side in order:
                figures = run_configuration(
                    args,
                    scenario,
                    side=side,
                    files=files,
                    dataset_bytes=dataset_bytes,
                    work=work,
                    disk=disk,
                )
                runs[side].append(figures)
        goal = 0.40 if len(SCENARIOS[scenario]) == 3 else None
        results[scenario] = summarise(runs, goal)
        summary = results[scenario]
        parts = [
            f"{name} {summary[name]}"
            for name in ("read_ratio", "wall_ratio", "daemon_read_ratio", "daemon_wall_ratio")
            if name in summary
        ]
        if "daemon_vs_embedded" in summary:
            parts.append(f"daemon vs embedded {summary['daemon_vs_embedded']}")
        log(f"{scenario}: {', '.join(parts)}")
    return {"disk": disk.name, "dataset_bytes": dataset_bytes, "scenarios": results}


def main(argv: list[str] | None = None) -> None:  # noqa: PLR0915 - one flat setup
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default="3G", help="dataset size (16M, 3G)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the dataset is made")
    parser.add_argument("--dataset", type=Path, help="reuse this dataset directory (not removed)")
    parser.add_argument("--keep", action="store_true", help="leave the dataset made in place")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dataset")
    parser.add_argument(
        "--memory-fraction",
        type=float,
        default=0.25,
        help="page cache the runs may use, as a fraction of the dataset",
    )
    parser.add_argument(
        "--headroom",
        type=parse_size,
        default="8M",
        help="slack per tool process above the cache and the memory charged that is not cache",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda s: s.split(","),
        default=list(SCENARIOS),
        help="three,two,staggered",
    )
    parser.add_argument(
        "--stagger", type=float, default=10.0, help="seconds between starts in 'staggered'"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario and side")
    parser.add_argument(
        "--sources", default="auto", help="the tools' aioduet source set (and the daemon's)"
    )
    parser.add_argument(
        "--via",
        type=lambda s: s.split(","),
        default=["embedded"],
        help="with aioduet through: embedded (a framework in each tool), daemon (one daemon "
        "serves the tools, which --connect), or embedded,daemon (both, in the same run)",
    )
    parser.add_argument(
        "--tools", type=Path, default=ROOT / "examples", help="directory of the tools"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per configuration")
    parser.add_argument("--json", type=Path, help="also write the JSON object to this file")
    args = parser.parse_args(argv)
    if not args.via or set(args.via) - set(VIA) or len(set(args.via)) != len(args.via):
        parser.error("--via: embedded, daemon or embedded,daemon")
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.repeat < 1 or not 0 < args.memory_fraction <= 1 or args.stagger < 0:
        parser.error("--repeat >= 1, 0 < --memory-fraction <= 1 and --stagger >= 0, please")
    missing = [t for t in ("backup", "scrub", "index") if not (args.tools / f"{t}.py").exists()]
    if missing:
        sys.exit(f"piggyback: no {', '.join(missing)} in {args.tools}")
    if os.geteuid() != 0:
        sys.exit("piggyback: needs root (memory cgroups, dropping the dataset's cache)")
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="aioduet-piggyback-", dir=args.dir))
    try:
        if args.dataset is not None:
            args.dataset_path = args.dataset.resolve()
        else:
            args.dataset_path = work / "data"
            log(f"making {args.size >> 20} MiB of files in {args.dataset_path}")
            make_dataset(args.dataset_path, args.size, args.seed)
        files = dataset_files(args.dataset_path)
        if not files:
            sys.exit(f"piggyback: no files in {args.dataset_path}")
        sizes = [p.stat().st_size for p in files]
        results = measure(args, files, work)
    finally:
        if args.keep and args.dataset is None:
            kept = args.dir / f"{work.name}-data"
            (work / "data").rename(kept)
            log(f"dataset kept in {kept}")
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "piggyback",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(args.dir),
        "parameters": {
            "size": args.size if args.dataset is None else None,
            "dataset": str(args.dataset) if args.dataset is not None else None,
            "seed": args.seed,
            "memory_fraction": args.memory_fraction,
            "headroom": args.headroom,
            "scenarios": args.scenarios,
            "stagger": args.stagger,
            "repeat": args.repeat,
            "sources": args.sources,
            "via": args.via,
            "tools": str(args.tools),
            "orders_without": {"backup": "path", "scrub": "disk", "index": "inode"},
        },
        "dataset": {
            "files": len(files),
            "bytes": results["dataset_bytes"],
            "median_file_bytes": statistics.median(sizes),
            "largest_file_bytes": max(sizes),
            "disk": results["disk"],
        },
        "scenarios": results["scenarios"],
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    write_report(report, args.json)


if __name__ == "__main__":
    main()
