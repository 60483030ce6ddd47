"""``aioduet top``: a live table of the most-cached and fastest-changing files.

Imported when the parser is built: only light imports at the top (see ``_cli``).

One loop does the work in order: take the task's items for one refresh interval, refresh
the model (paths, cachestat), show it. Alongside it, SIGINT/SIGTERM and the ``q`` key (read
in cbreak mode when stdin is a terminal) cancel everything; the terminal is restored on the
way out, whatever ends the command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anyio
    from rich.console import Console

    from .abc import Task
    from .views._top import TopModel, TopSnapshot

from ._cli_common import at_least_one, existing_directory, in_loop, positive, until_signal

__all__ = ["configure"]

#: Items taken per poll while draining the registration scan's items.
_DRAIN = 4096


def configure(parser: argparse.ArgumentParser) -> None:
    """Add top's own arguments (the framework and connect options are already there)."""
    parser.description = (
        "Show the files of a directory tree with the most pages in the page cache, and the"
        " files whose pages come and go fastest (pages added and removed per second), with"
        " their dirty and writeback pages and the totals, refreshed every --refresh"
        " seconds. Press q or Ctrl-C to quit. Without a terminal (or with --once or"
        " --iterations) snapshots are printed one after the other."
    )
    parser.add_argument(
        "path",
        nargs="?",
        type=existing_directory,
        default=".",
        metavar="PATH",
        help="directory to watch (default: the current directory)",
    )
    parser.add_argument(
        "--refresh",
        type=positive,
        default=1.0,
        metavar="SECONDS",
        help="seconds between two refreshes (default 1); rates are over the last three",
    )
    parser.add_argument(
        "--rows", type=at_least_one, default=10, help="rows of each table (default 10)"
    )
    count = parser.add_mutually_exclusive_group()
    count.add_argument(
        "--once",
        dest="iterations",
        action="store_const",
        const=1,
        help="print one snapshot once the tree is scanned, and exit",
    )
    count.add_argument(
        "--iterations",
        type=at_least_one,
        default=None,
        metavar="N",
        help="print N snapshots, --refresh seconds apart, and exit",
    )
    parser.set_defaults(run=in_loop(_top))


async def _top(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)
    from rich.console import Console  # noqa: PLC0415 - same reason

    from ._cli_daemon import framework_for  # noqa: PLC0415 - not at start-up
    from ._model import Event  # noqa: PLC0415 - same reason
    from .views._top import TopModel  # noqa: PLC0415 - same reason

    console = Console()
    live = args.iterations is None and console.is_terminal
    async with framework_for(args) as duet:
        task = await duet.register("top", Event.EXISTS | Event.MODIFIED, args.path)
        model = TopModel(task.path, rows=args.rows, window=3 * args.refresh)
        async with anyio.create_task_group() as group:
            group.start_soon(until_signal, group.cancel_scope.cancel)
            if live:
                await _live(task, model, args.refresh, console, group.cancel_scope)
            else:
                await _print(task, model, args.refresh, args.iterations, console)
            group.cancel_scope.cancel()
    return 0


async def _print(
    task: Task, model: TopModel, refresh: float, iterations: int | None, console: Console
) -> None:
    from .views._top import render  # noqa: PLC0415 - not at start-up (module docstring)

    def show(snapshot: TopSnapshot) -> None:
        console.print(render(snapshot))
        console.print()

    await _take_until_scanned(task, model, None, None)
    shown = 0
    while True:
        await _show(task, model, show)
        shown += 1
        if iterations is not None and shown >= iterations:
            return
        await _take_for(task, model, refresh)


async def _live(
    task: Task,
    model: TopModel,
    refresh: float,
    console: Console,
    scope: anyio.CancelScope,
) -> None:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)
    from rich.live import Live  # noqa: PLC0415 - same reason

    from .views._top import render  # noqa: PLC0415 - same reason

    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    footer = "q or Ctrl-C to quit" if fd is not None else "Ctrl-C to quit"
    with _cbreak(fd), Live(console=console, screen=True, auto_refresh=False) as live:

        def show(snapshot: TopSnapshot) -> None:
            live.update(render(snapshot, footer), refresh=True)

        async with anyio.create_task_group() as group:
            if fd is not None:
                group.start_soon(_quit_on_q, fd, scope)
            await _take_until_scanned(task, model, refresh, lambda: _show(task, model, show))
            while True:
                await _show(task, model, show)
                await _take_for(task, model, refresh)


async def _show(task: Task, model: TopModel, show: Callable[[TopSnapshot], None]) -> None:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    show(await model.refresh(anyio.current_time(), task.get_path))


async def _take_until_scanned(
    task: Task,
    model: TopModel,
    refresh: float | None,
    show: Callable[[], Awaitable[None]] | None,
) -> None:
    """Apply items until the registration scan is done (calling ``show`` every ``refresh``
    seconds meanwhile, if given), then take its picture as the baseline of the rates."""
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    while True:
        scanned = False
        with anyio.move_on_after(refresh if show is not None and refresh else float("inf")):
            await task.wait_scanned()
            scanned = True
        # Items wait in the store meanwhile: take them all now (poll never waits for new ones).
        while True:
            items = await task.poll(_DRAIN)
            model.apply(items)
            if len(items) < _DRAIN:
                break
        if scanned:
            model.settle(anyio.current_time())
            return
        if show is not None:
            await show()


async def _take_for(task: Task, model: TopModel, seconds: float) -> None:
    """Apply the task's items as they come for ``seconds`` (fetch is cancel-safe)."""
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    with anyio.move_on_after(seconds):
        while True:
            model.apply(await task.fetch(_DRAIN))


async def _quit_on_q(fd: int, scope: anyio.CancelScope) -> None:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    while True:
        await anyio.wait_readable(fd)
        keys = os.read(fd, 64)
        if not keys:  # end of input: only Ctrl-C and signals quit from now on
            return
        if b"q" in keys or b"Q" in keys:
            scope.cancel()
            return


@contextlib.contextmanager
def _cbreak(fd: int | None) -> Iterator[None]:
    """Keys reach the program one by one, unechoed; the terminal's mode is restored after."""
    if fd is None:
        yield
        return
    import termios  # noqa: PLC0415 - only top's live display needs them
    import tty  # noqa: PLC0415 - same reason

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
