"""dummy_task.py PATH: print the items of an aioduet task as they come (duet-tools' dummy task).

Registers one task on PATH, event-based by default (ADDED|REMOVED|DIRTY|FLUSHED: every
transition, bits accumulated until fetched) or state-based with ``--state`` (EXISTS|MODIFIED:
net changes only), and prints every item on stdout, one line each::

    ADDED          pages 0-15 (16)  dev 2049 ino 1234 gen 56  /data/file
    {"dev": 2049, "ino": 1234, "gen": 56, "index": 0, "count": 16, "state": ["ADDED"], ...}

(the second with ``--json``; ``path`` is printed only with ``--get-path``, and is null when the
file is no longer there). With ``--period SECONDS`` it fetches the pending items in batches,
sleeping between batches as duet-tools' dummy task does; with 0 (the default) it iterates.
It stops ``--duration`` seconds after it is ready, or at Ctrl-C (or SIGTERM), and exits 0. On
stderr: the registration, ``ready`` once the task's registration scan is done, and a summary
at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from typing import Any

import anyio

import aioduet
from aioduet import Event

PROG = "dummy_task.py"
EVENT_MASK = Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED
STATE_MASK = Event.EXISTS | Event.MODIFIED


def item_text(item: aioduet.Item, path: str | None, as_json: bool, with_path: bool) -> str:
    names = [event.name or "" for event in Event if event & item.state]
    uuid = item.uuid
    if as_json:
        fields: dict[str, Any] = {
            "dev": uuid.dev,
            "ino": uuid.ino,
            "gen": uuid.gen,
            "index": item.index,
            "count": item.count,
            "state": names,
        }
        if with_path:
            fields["path"] = path
        return json.dumps(fields)
    last = item.index + item.count - 1
    line = (
        f"{'|'.join(names):<14} pages {item.index}-{last} ({item.count})  "
        f"dev {uuid.dev} ino {uuid.ino} gen {uuid.gen}"
    )
    if with_path:
        line += f"  {path if path is not None else '<gone>'}"
    return line


class Dummy:
    def __init__(self, task: aioduet.Task, args: argparse.Namespace) -> None:
        self.task = task
        self.args = args
        self.items = 0
        self.fetches = 0

    async def show(self, items: list[aioduet.Item]) -> None:
        self.fetches += 1
        for item in items:
            path = None
            if self.args.get_path:
                with contextlib.suppress(aioduet.NotFound):
                    path = await self.task.get_path(item.uuid)
            print(item_text(item, path, self.args.json, self.args.get_path), flush=True)
            self.items += 1

    async def run(self) -> None:
        if self.args.period == 0:
            async for item in self.task:
                await self.show([item])
            return
        while True:
            try:
                items = self.task.fetch_nowait(self.args.max_items)
            except (anyio.ClosedResourceError, anyio.EndOfStream):
                return
            if items:
                await self.show(items)
            await anyio.sleep(self.args.period)


async def _until_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _ready(task: aioduet.Task, duration: float, scope: anyio.CancelScope) -> None:
    await task.wait_scanned()
    if duration:
        scope.deadline = anyio.current_time() + duration
    print(f"{PROG}: ready", file=sys.stderr, flush=True)


async def amain(args: argparse.Namespace) -> int:
    mask = STATE_MASK if args.state else EVENT_MASK
    async with (
        aioduet.open_duet(args.sources) as duet,
        duet.register("dummy", mask, args.path) as task,
    ):
        names = "|".join(event.name or "" for event in Event if event & mask)
        print(
            f"{PROG}: task {task.id} registered on {task.path} for {names}, sources "
            f"{','.join(duet.source_names)}",
            file=sys.stderr,
            flush=True,
        )
        dummy = Dummy(task, args)
        async with anyio.create_task_group() as group:
            group.start_soon(_until_signal, group.cancel_scope)
            group.start_soon(_ready, task, args.duration, group.cancel_scope)
            await dummy.run()
            group.cancel_scope.cancel()
    print(f"{PROG}: {dummy.items} items in {dummy.fetches} fetches", file=sys.stderr, flush=True)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Register an aioduet task on PATH and print its items as they come, "
        "like duet-tools' dummy task.",
        epilog="Exit codes: 0 done (duration over, or Ctrl-C/SIGTERM); 2 bad arguments or "
        "PATH not a directory, or the sources cannot run here.",
    )
    parser.add_argument("path", metavar="PATH", help="directory to register the task on")
    parser.add_argument(
        "--state",
        action="store_true",
        help="state-based mask EXISTS|MODIFIED (default: event-based ADDED|REMOVED|DIRTY|FLUSHED)",
    )
    parser.add_argument(
        "--get-path", action="store_true", help="resolve and print each item's file path"
    )
    parser.add_argument(
        "--period",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="fetch the pending items every SECONDS (default 0: iterate, printing each item "
        "as it comes)",
    )
    parser.add_argument(
        "--max-items",
        type=_positive_int,
        default=256,
        metavar="N",
        help="items per fetch with --period (default 256)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="exit SECONDS after the task is ready (registered and its initial scan done; "
        "default 0: run until Ctrl-C)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per item")
    parser.add_argument(
        "--sources",
        default="auto",
        metavar="SET",
        help="aioduet sources: auto, exact, scan, or a comma-separated list (default auto)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not os.path.isdir(args.path):
        parser.exit(2, f"{PROG}: error: {args.path}: not an existing directory\n")
    args.path = os.path.abspath(args.path)
    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401, PLC0415 - only probing whether it is installed
    except ImportError:
        pass
    else:
        options["use_uvloop"] = True
    try:
        return anyio.run(amain, args, backend_options=options)
    except KeyboardInterrupt:  # a second Ctrl-C while closing
        return 0
    except (ValueError, aioduet.AioduetError) as exc:
        parser.exit(2, f"{PROG}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
