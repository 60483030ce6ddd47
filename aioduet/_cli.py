"""The ``aioduet`` command line: ``watch`` streams items; ``demo`` runs a scripted workload;
``scan`` reports the page-cache residency of files and trees; ``doctor`` says which kernel
interfaces are usable here.

``scan`` runs synchronously, without an event loop, and must start fast (``bench/scan_tree.py``
times it against vmtouch, start-up included): this module imports anyio and the framework only
inside the functions of the other commands, never at the top.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, _cli_record, _cli_top, _kernel, _scan_run
from ._cli_common import (
    at_least_one,
    existing_directory,
    existing_path,
    in_loop,
    int_at_least,
    positive,
    until_signal,
)
from ._sockets import DEFAULT_SOCKET_MODE, default_socket_path
from .errors import AioduetError, NotFound

if TYPE_CHECKING:
    from ._doctor import Check
    from ._model import Event, Item
    from .abc import Task

__all__ = ["main"]

_DEFAULT_MASK = "EXISTS,MODIFIED"


def parse_mask(text: str) -> Event:
    """``"EXISTS,MODIFIED"`` or ``"added|removed"`` -> Event; ArgumentTypeError if invalid."""
    from ._framework import validate_mask  # noqa: PLC0415 - not at start-up (module docstring)
    from ._model import Event  # noqa: PLC0415 - same reason

    mask = Event(0)
    for word in text.replace("|", ",").split(","):
        name = word.strip().upper()
        if not name:
            continue
        try:
            mask |= Event[name]
        except KeyError:
            names = ", ".join(e.name or "" for e in Event if e != Event.OVERFLOW)
            raise argparse.ArgumentTypeError(
                f"unknown event {word.strip()!r} (use {names})"
            ) from None
    try:
        return validate_mask(mask)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def state_names(state: Event) -> list[str]:
    """The names of the bits set in an item's state, in value order."""
    from ._model import Event  # noqa: PLC0415 - not at start-up (module docstring)

    return [e.name or "" for e in Event if e & state]


def item_json(item: Item, path: str | None) -> str:
    """One JSON line with the keys DESIGN.md fixes: dev, ino, gen, index, count, state, path."""
    u = item.uuid
    return json.dumps(
        {
            "dev": u.dev,
            "ino": u.ino,
            "gen": u.gen,
            "index": item.index,
            "count": item.count,
            "state": state_names(item.state),
            "path": path,
        },
        separators=(",", ":"),
    )


def item_line(item: Item, path: str | None) -> str:
    """One human-readable line for an item."""
    from ._model import Event  # noqa: PLC0415 - not at start-up (module docstring)

    state = "|".join(state_names(item.state))
    if item.state == Event.OVERFLOW:
        return f"{state:<16} observations were lost; rescanning {path}"
    last = item.index + item.count - 1
    where = path if path is not None else f"<dev {item.uuid.dev} ino {item.uuid.ino}>"
    return f"{state:<16} pages {item.index}-{last} ({item.count})  {where}"


async def _print_items(task: Task, as_json: bool, out: TextIO) -> None:
    async for item in task:
        try:
            path: str | None = await task.get_path(item.uuid)
        except NotFound:
            path = None
        print(item_json(item, path) if as_json else item_line(item, path), file=out, flush=True)


async def _report_scan(task: Task) -> None:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    started = anyio.current_time()
    await task.wait_scanned()
    if not task.closed:
        elapsed = anyio.current_time() - started
        print(f"initial scan of {task.path} done in {elapsed:.1f} s", file=sys.stderr)


async def _watch(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    from ._cli_daemon import framework_for  # noqa: PLC0415 - same reason

    async with framework_for(args) as duet:
        task = await duet.register("watch", args.mask, args.path)
        mask = "|".join(state_names(args.mask))
        print(f"watching {task.path} for {mask} (Ctrl-C to stop)", file=sys.stderr)
        async with anyio.create_task_group() as group:
            group.start_soon(until_signal, group.cancel_scope.cancel)
            group.start_soon(_report_scan, task)
            if args.duration is not None:
                group.cancel_scope.deadline = anyio.current_time() + args.duration
            await _print_items(task, args.json, sys.stdout)
    return 0


async def _status_command(args: argparse.Namespace) -> int:
    from ._cli_daemon import show_status  # noqa: PLC0415 - not at start-up (module docstring)

    return await show_status(args)


async def _daemon_command(args: argparse.Namespace) -> int:
    from ._cli_daemon import run_daemon  # noqa: PLC0415 - not at start-up (module docstring)

    return await run_daemon(args)


async def _demo(args: argparse.Namespace) -> int:
    import anyio.to_thread  # noqa: PLC0415 - not at start-up (module docstring)

    from ._framework import open_duet  # noqa: PLC0415 - same reason
    from ._model import Event  # noqa: PLC0415 - same reason

    base = tempfile.mkdtemp(prefix="aioduet-demo-", dir=args.directory)
    page = _kernel.PAGE_SIZE
    try:
        files = {name: os.path.join(base, name) for name in ("alpha", "beta")}
        await anyio.to_thread.run_sync(_make_clean_files, files.values(), 64 * page)
        print(f"demo directory {base}: two files of 64 pages, flushed and evicted", file=sys.stderr)
        async with open_duet(interval=0.1) as duet:
            task = await duet.register("demo", Event.EXISTS | Event.MODIFIED, base)
            await task.wait_scanned()
            steps: list[tuple[str, Callable[[], None], str, Event]] = [
                ("read alpha", lambda: _read(files["alpha"]), files["alpha"], Event.ADDED),
                (
                    "write 2 pages of beta",
                    lambda: _write(files["beta"], 2 * page, 2 * page),
                    files["beta"],
                    Event.DIRTY,
                ),
                ("fsync beta", lambda: _fsync(files["beta"]), files["beta"], Event.FLUSHED),
                ("evict alpha", lambda: _evict(files["alpha"]), files["alpha"], Event.REMOVED),
            ]
            missing = 0
            for title, action, path, expected in steps:
                print(f"--- {title}: expecting {expected.name}", file=sys.stderr)
                action()
                if not await _show_until(task, path, expected, args.json):
                    print(f"    no {expected.name} item within 10 s", file=sys.stderr)
                    missing += 1
            status = await duet.status()
            sources = ", ".join(f"{s.name} ({s.observations} observations)" for s in status.sources)
            print(
                f"store: {status.store.files} files, {status.store.memory_bytes} bytes;"
                f" sources: {sources}",
                file=sys.stderr,
            )
        return 1 if missing else 0
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _show_until(task: Task, path: str, expected: Event, as_json: bool) -> bool:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    with anyio.move_on_after(10):
        while True:
            for item in await task.fetch():
                try:
                    found: str | None = await task.get_path(item.uuid)
                except NotFound:
                    found = None
                print(item_json(item, found) if as_json else item_line(item, found), flush=True)
                if found == path and item.state & expected:
                    return True
    return False


def _make_clean_files(paths: Iterable[str], size: int) -> None:
    for path in paths:
        with open(path, "wb") as f:
            f.write(os.urandom(size))
            f.flush()
            os.fsync(f.fileno())
            _kernel.evict(f.fileno())


def _with_fd(path: str, flags: int, action: Callable[[int], Any]) -> None:
    fd = os.open(path, flags)
    try:
        action(fd)
    finally:
        os.close(fd)


def _read(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def _write(path: str, offset: int, length: int) -> None:
    _with_fd(path, os.O_WRONLY, lambda fd: os.pwrite(fd, b"w" * length, offset))


def _fsync(path: str) -> None:
    _with_fd(path, os.O_WRONLY, os.fsync)


def _evict(path: str) -> None:
    _with_fd(path, os.O_RDONLY, _kernel.evict)


def _scan_command(args: argparse.Namespace) -> int:
    # Plain synchronous work: no event loop, no thread, no framework (module docstring).
    return _scan_run.run_scan(
        args.paths,
        recursive=args.recursive,
        as_json=args.json,
        total=args.total,
        out=sys.stdout,
        err=sys.stderr,
    )


def _doctor_command(args: argparse.Namespace) -> int:
    from . import _doctor  # noqa: PLC0415 - not at start-up (module docstring)

    report = _doctor.run_checks()
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        print(doctor_table(report.checks))
        if report.runnable:
            print(f"\nsources='auto' runs {'+'.join(report.auto)} here")
        else:
            print("\nthe unprivileged sources cannot run here: see the unavailable rows")
    return 0 if report.runnable else 1


def doctor_table(checks: Sequence[Check]) -> str:
    """Checks as aligned columns (name, status, finding), each fix on a line of its own."""
    name_width = max((len(check.name) for check in checks), default=0) + 2
    status_width = max((len(check.status) for check in checks), default=0) + 2
    lines = []
    for check in checks:
        lines.append(f"{check.name:<{name_width}}{check.status:<{status_width}}{check.detail}")
        if check.fix:
            lines.append(f"{'':<{name_width + status_width}}fix: {check.fix}")
    return "\n".join(lines)


_budget = int_at_least(4, " (one file check)")


def _add_framework_options(parser: argparse.ArgumentParser) -> None:
    """The options of the framework a command runs (embedded, or the daemon's own)."""
    parser.add_argument(
        "--interval",
        type=positive,
        default=1.0,
        help="seconds between two rounds of the periodic residency scan (default 1)",
    )
    parser.add_argument(
        "--budget",
        type=_budget,
        default=None,
        help="kernel calls per round of the periodic scan (default 800: under 1%% of a core)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="glob of paths not to watch, matched against the path and its last part"
        " (repeatable: --exclude '*.tmp' --exclude .git)",
    )
    parser.add_argument(
        "--sources",
        default="auto",
        help="'auto' (exact where it can run), 'scan', 'exact', or source names, comma-separated",
    )


def _add_connect_options(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--connect",
        nargs="?",
        const="",
        default=None,
        metavar="SOCKET",
        help="use the aioduet daemon (at SOCKET; default: $AIODUET_SOCKET, your own daemon's"
        " socket, else /run/aioduet/aioduet.sock); an error if none answers. Without it"
        " the daemon is used when one answers, an embedded framework otherwise",
    )
    choice.add_argument(
        "--embedded",
        action="store_true",
        help="run an embedded framework in this process even if a daemon runs",
    )


def _socket_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an octal mode like 0660, not {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"a mode between 0 and 0777, not {text}")
    return mode


def _add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """The daemon's own options (the framework's are added by the caller)."""
    parser.add_argument(
        "--socket",
        default=None,
        help=f"where to listen (default {default_socket_path(0)} as root,"
        " $XDG_RUNTIME_DIR/aioduet.sock otherwise)",
    )
    parser.add_argument(
        "--socket-mode",
        type=_socket_mode,
        default=DEFAULT_SOCKET_MODE,
        help="permissions of the socket file, octal (default 0666: anyone may connect; what"
        " each client may see is checked per request)",
    )
    parser.add_argument(
        "--max-tasks",
        type=at_least_one,
        default=64,
        help="tasks registered at once, all clients together (default 64, the most)",
    )
    parser.add_argument(
        "--tasks-per-uid",
        type=at_least_one,
        default=8,
        help="tasks the clients of one user other than root may hold (default 8)",
    )
    parser.add_argument(
        "--max-clients",
        type=at_least_one,
        default=256,
        help="connections at once (default 256)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioduet", description="Page-cache events for files, as Duet gave them."
    )
    parser.add_argument("--version", action="version", version=f"aioduet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    watch = commands.add_parser("watch", help="stream the page-cache items of a directory")
    watch.add_argument("path", type=existing_directory, help="directory to watch")
    watch.add_argument(
        "--mask",
        type=parse_mask,
        default=_DEFAULT_MASK,  # a string: argparse parses it only when `watch` runs
        help=f"events, comma-separated (default {_DEFAULT_MASK})",
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per item")
    _add_framework_options(watch)
    watch.add_argument(
        "--duration",
        type=positive,
        default=None,
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    _add_connect_options(watch)
    watch.set_defaults(run=in_loop(_watch))

    status = commands.add_parser(
        "status",
        help="the daemon's tasks, sources and store (or an embedded framework's sources)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    _add_connect_options(status)
    _add_framework_options(status)
    status.set_defaults(run=in_loop(_status_command))

    daemon = commands.add_parser(
        "daemon",
        help="serve one framework to many processes on a Unix socket (also: aioduetd)",
        description=(
            "Run one framework and serve it on a Unix socket until SIGTERM or SIGINT (or a"
            " shutdown request from root). Clients (aioduet.connect(), `aioduet watch`)"
            " share its sources and store. Logs go to stderr."
        ),
    )
    _add_framework_options(daemon)
    _add_daemon_options(daemon)
    daemon.set_defaults(run=in_loop(_daemon_command))

    top = commands.add_parser(
        "top",
        help="live table of the most-cached and fastest-changing files of a directory",
    )
    _add_framework_options(top)
    _add_connect_options(top)
    _cli_top.configure(top)

    record = commands.add_parser(
        "record",
        help="record the page-cache residency of a tree over time into a file",
    )
    _add_framework_options(record)
    _add_connect_options(record)
    _cli_record.configure_record(record)

    report = commands.add_parser(
        "report", help="heatmap, working-set size or per-file table of a recording"
    )
    _cli_record.configure_report(report)

    demo = commands.add_parser(
        "demo", help="read, write, flush and evict files in a fresh directory and show the items"
    )
    demo.add_argument(
        "directory",
        nargs="?",
        type=existing_directory,
        default=None,
        help="where to make the demo directory (default: the temp directory)",
    )
    demo.add_argument("--json", action="store_true", help="one JSON object per item")
    demo.set_defaults(run=in_loop(_demo))

    scan = commands.add_parser(
        "scan",
        help="page-cache residency of files and trees, like fincore and vmtouch",
        description=(
            "Report the page-cache residency of each regular file: cached, dirty, under"
            " writeback and evicted pages (one cachestat call per file). A directory"
            " stands for the regular files directly in it; -R walks its whole tree."
            " Symbolic links are followed for the PATHs given, never inside directories."
            " Files the kernel will not tell about show '?' (null in JSON)."
            " Exit status: 0 if every file was seen; 1 if some were unknown or skipped or a"
            " directory could not be listed; 2 for a usage error such as a missing PATH."
        ),
    )
    scan.add_argument(
        "paths", nargs="+", type=existing_path, metavar="PATH", help="files and directories"
    )
    scan.add_argument("-R", "--recursive", action="store_true", help="walk directories recursively")
    scan.add_argument("--json", action="store_true", help="one JSON object per file")
    scan.add_argument(
        "--total",
        action="store_true",
        help='end with the sums over all files (in JSON: an object with "total": true)',
    )
    scan.set_defaults(run=_scan_command)

    doctor = commands.add_parser(
        "doctor",
        help="which kernel interfaces are usable here, and why not",
        description=(
            "Check root, tracefs, the page-cache tracepoints, cachestat, mincore, the inotify"
            " limits, the writeback counters, fanotify and a running kdamond, and say which"
            " sources sources='auto' picks. Read-only: fixes are printed, never applied."
            " Exit status: 0 if the unprivileged sources can run here, 1 if not."
        ),
    )
    doctor.add_argument(
        "--json",
        action="store_true",
        help='one JSON object: {"checks": [{"name", "status", "detail", "fix"}], "auto": [...]}',
    )
    doctor.set_defaults(run=_doctor_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aioduet`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        result: int = args.run(args)
    except KeyboardInterrupt:
        return 0
    except (AioduetError, OSError, ValueError) as exc:
        print(f"aioduet: error: {exc}", file=sys.stderr)
        return 1
    except ExceptionGroup as group:  # a command's task group: one error is still one line
        leaf = _only_error(group)
        if not isinstance(leaf, AioduetError | OSError | ValueError):
            raise
        print(f"aioduet: error: {leaf}", file=sys.stderr)
        return 1
    return result


def _only_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception inside nested groups of one, else the group itself."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
