"""Run every benchmark of bench/, write one JSON report, and regenerate docs/performance.md.

``python -m bench --quick`` (under five minutes) or ``python -m bench`` (each benchmark's full
default run, about an hour; root for most of them). Each benchmark runs in its own process, in
a fresh directory of its own under ``--dir``, and prints its JSON object; the runner gathers
them into one file with the machine's details, the comparison of aioduet with each peer, and
what each run cost. The tables of docs/performance.md between ``<!-- bench:NAME -->``
markers and the plots in docs/img/ are then regenerated from that file, so the page never
holds a hand-edited figure (``--render FILE`` regenerates them from an earlier file;
``--check`` only reports whether the page is what the file gives).

A benchmark that fails does not stop the others: its entry says why, and the runner exits 1
at the end. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from _common import log, machine
from _report import check_page, comparisons, render_page
from _suite import ENTRIES, PROFILES, Entry

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DOCS = ROOT / "docs" / "performance.md"
PLOTS = ROOT / "docs" / "img"


def _git_commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        result = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip() or None
    return None


def _version() -> str | None:
    with contextlib.suppress(ImportError):
        import aioduet  # noqa: PLC0415 - the runner works without the package too

        return aioduet.__version__
    return None


def _pump(process: subprocess.Popen[str], name: str, tail: deque[str]) -> None:
    """Echo the benchmark's progress, keeping its last lines for the report of a failure."""
    assert process.stderr is not None
    with process.stderr:
        for line in process.stderr:
            tail.append(line.rstrip("\n"))
            log(f"  {name}: {line.rstrip()}")


def _group_members(group: int) -> list[str]:
    """The live processes of the process group ``group`` (zombies left out), as "pid command"."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == group and fields[0] != "Z":
                command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                members.append(f"{stat.parent.name} {command.decode(errors='replace')}")
    return members


def _end_group(group: int, grace: float) -> list[str]:
    """Give what is left of the process group ``group`` ``grace`` seconds to exit on its own
    (children still winding down as their parent exits), then SIGKILL the rest; those."""
    deadline = time.monotonic() + grace
    left = _group_members(group)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _group_members(group)
    if left:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    return left


def run_entry(entry: Entry, profile: str, base: Path) -> dict[str, Any]:
    """Run one benchmark in a fresh directory under ``base``; its report, or why it has none."""
    args = list(entry.args[profile])
    record: dict[str, Any] = {"script": entry.script, "title": entry.title, "peer": entry.peer}
    if entry.root and os.geteuid() != 0:
        record["skipped"] = "needs root"
        return record
    workdir = Path(tempfile.mkdtemp(prefix=f"{entry.name}-", dir=base))
    record["options"] = list(args)  # what reproduces it, besides the directory
    if entry.dir_flag is not None:
        args += [entry.dir_flag, str(workdir)]
    record["argv"] = [entry.script, *args]
    stderr_tail: deque[str] = deque(maxlen=30)
    started = time.monotonic()
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with tempfile.TemporaryFile("w+") as stdout:
        process = subprocess.Popen(
            [sys.executable, str(BENCH / entry.script), *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=pythonpath),
            start_new_session=True,  # its own process group: its children end with it
        )
        pump = threading.Thread(target=_pump, args=(process, entry.name, stderr_tail))
        pump.start()
        try:
            process.wait(timeout=entry.timeout[profile])
        except subprocess.TimeoutExpired:
            record["error"] = f"timed out after {entry.timeout[profile]:g} s"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        finally:  # a timeout, Ctrl-C, or children it left running: end the whole group
            left = _end_group(process.pid, grace=0.0 if process.poll() is None else 5.0)
            if left and "error" not in record:
                record["left_running"] = left
            process.wait()
        pump.join()
        record["seconds"] = round(time.monotonic() - started, 1)
        record["returncode"] = process.returncode
        stdout.seek(0)
        text = stdout.read()
    if "error" not in record:
        if process.returncode != 0:
            record["error"] = f"exited with {process.returncode}"
        else:
            try:
                record["report"] = json.loads(text)
            except json.JSONDecodeError as error:
                record["error"] = f"its output is not one JSON object: {error}"
    if "error" in record:
        record["stderr_tail"] = list(stderr_tail)
    record["left_behind"] = sorted(path.name for path in workdir.iterdir())
    shutil.rmtree(workdir, ignore_errors=True)
    return record


def run_suite(profile: str, names: list[str], base: Path) -> dict[str, Any]:
    """Run the entries named (every one when empty) in ``profile``; the runner's report."""
    chosen = [e for e in ENTRIES if profile in e.args and (not names or e.name in names)]
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "all",
        "profile": profile,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "aioduet": _version(),
        "commit": _git_commit(),
        "machine": machine(base),
        "benchmarks": {},
    }
    for number, entry in enumerate(chosen, 1):
        log(f"[{number}/{len(chosen)}] {entry.name}: {entry.title} (peer: {entry.peer})")
        record = run_entry(entry, profile, base)
        report["benchmarks"][entry.name] = record
        outcome = record.get("error") or record.get("skipped") or f"{record['seconds']} s"
        log(f"[{number}/{len(chosen)}] {entry.name}: {outcome}")
    report["comparisons"] = comparisons(report)
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return report


def _names(text: str) -> list[str]:
    known = {entry.name for entry in ENTRIES}
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").split("\n\n")[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_const", const="quick", dest="profile", help="under 5 minutes"
    )
    size.add_argument(
        "--profile",
        choices=PROFILES,
        help="full (default): each benchmark's default sizes; quick; smoke: tiny, for the tests",
    )
    parser.add_argument(
        "--only", type=_names, default=[], help="benchmarks to run, comma-separated"
    )
    parser.add_argument(
        "--dir", type=Path, default=Path("/tmp"), help="where the benchmarks' files go (ext4)"
    )
    parser.add_argument(
        "--out", type=Path, help="the JSON report (default bench/results/<profile>.json)"
    )
    parser.add_argument("--docs", type=Path, default=DOCS, help="the page whose tables are made")
    parser.add_argument("--plots", type=Path, default=PLOTS, help="where the PNG plots go")
    parser.add_argument("--no-docs", action="store_true", help="leave the page and plots alone")
    parser.add_argument(
        "--render", type=Path, metavar="FILE", help="run nothing: regenerate from this report"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="with --render: change nothing, exit 1 if the page's tables differ from the report",
    )
    parser.add_argument(
        "--list", action="store_true", help="print the benchmarks and their arguments, and exit"
    )
    args = parser.parse_args(argv)
    args.profile = args.profile or "full"
    if args.check and args.render is None:
        parser.error("--check needs --render FILE")
    if not args.dir.is_dir():
        parser.error(f"--dir {args.dir} is not a directory")
    return args


def _plots_missing() -> bool:
    """Whether matplotlib, which draws the page's plots, cannot be imported."""
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    draws = not args.check if args.render is not None else not args.no_docs
    if draws and not args.list and _plots_missing():  # say so now, not after an hour of runs
        log("python -m bench: the plots need matplotlib: pip install -e '.[plot]' (or --no-docs)")
        return 2
    if args.list:
        for entry in ENTRIES:
            if args.profile in entry.args:
                line = " ".join([entry.script, *entry.args[args.profile]])
                print(f"{entry.name:16} {line}  (peer: {entry.peer})")
        return 0
    if args.render is not None:
        try:
            report = json.loads(args.render.read_text())
        except (OSError, json.JSONDecodeError) as error:
            log(f"python -m bench: cannot read the report {args.render}: {error}")
            return 2
        if args.check:
            stale = check_page(report, args.docs, args.plots)
            for name in stale:
                log(f"{args.docs}: the block {name!r} differs from {args.render}")
            return 1 if stale else 0
        render_page(report, args.docs, args.plots)
        log(f"regenerated {args.docs} and the plots in {args.plots} from {args.render}")
        return 0
    base = Path(tempfile.mkdtemp(prefix="aioduet-bench-", dir=args.dir))
    try:
        report = run_suite(args.profile, args.only, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = args.out or BENCH / "results" / f"{args.profile}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {out} ({report['wall_seconds']} s)")
    if not args.no_docs:
        render_page(report, args.docs, args.plots)
        log(f"regenerated the tables of {args.docs} and the plots in {args.plots}")
    failed = [name for name, record in report["benchmarks"].items() if "error" in record]
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
