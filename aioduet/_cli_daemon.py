"""The command line's daemon side: ``aioduet daemon`` / ``aioduetd``, ``aioduet status``, and
the choice between the daemon and an embedded framework for ``watch``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from . import abc as _abc
from ._framework import open_duet
from ._sockets import default_socket_path
from ._status import Status
from .daemon import Client, connect, serve
from .errors import DaemonUnavailable

__all__ = ["framework_for", "main_aioduetd", "run_daemon", "show_status"]

logger = logging.getLogger("aioduet.daemon")


def framework_options(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The ``open_duet`` sources and keyword arguments a command's options ask for."""
    options: dict[str, Any] = {"interval": args.interval, "exclude": args.exclude}
    if args.budget is not None:
        options["budget"] = args.budget
    return args.sources, options


async def run_daemon(args: argparse.Namespace) -> int:
    """``aioduet daemon``: serve one framework until SIGTERM/SIGINT or a root client's shutdown."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr,
            level=logging.INFO,
            format="%(asctime)s aioduetd[%(process)d] %(levelname)s %(name)s: %(message)s",
        )
    path = args.socket or default_socket_path()
    sources, options = framework_options(args)
    async with (
        open_duet(sources, max_tasks=args.max_tasks, **options) as duet,
        serve(
            duet,
            path,
            mode=args.socket_mode,
            tasks_per_uid=args.tasks_per_uid,
            max_clients=args.max_clients,
        ) as serving,
    ):
        logger.info(
            "ready: sources %s, up to %d tasks (%d per user), socket %s",
            ",".join(duet.source_names),
            duet.max_tasks,
            args.tasks_per_uid,
            serving.socket_path,
        )
        async with anyio.create_task_group() as group:

            async def stop_on_request() -> None:
                await serving.server.stop_requested.wait()
                group.cancel_scope.cancel()

            group.start_soon(stop_on_request)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    logger.info("%s: stopping", signal.Signals(signum).name)
                    group.cancel_scope.cancel()
                    break
    logger.info("stopped")
    return 0


def main_aioduetd(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aioduetd`` command: ``aioduet daemon`` under its own name."""
    from ._cli import main  # noqa: PLC0415 - _cli imports this module lazily

    return main(["daemon", *(sys.argv[1:] if argv is None else argv)])


async def daemon_or_none(path: str | None, *, required: bool) -> Client | None:
    """A connected client if a daemon answers at ``path`` (default: where clients look).

    Raises:
        DaemonUnavailable: none answers, and ``required``.
    """
    client = connect(path)
    try:
        await client.__aenter__()
    except DaemonUnavailable:
        if required:
            raise
        return None
    return client


@contextlib.asynccontextmanager
async def framework_for(args: argparse.Namespace) -> AsyncIterator[_abc.Duet]:
    """The daemon if ``--connect`` asks for it or one runs (and ``--embedded`` is not given);
    an embedded framework with the command's options otherwise."""
    if not args.embedded:
        client = await daemon_or_none(args.connect or None, required=args.connect is not None)
        if client is not None:
            print(f"using the aioduet daemon at {client.socket_path}", file=sys.stderr)
            try:
                yield client
            finally:
                await client.aclose()
            return
    sources, options = framework_options(args)
    async with open_duet(sources, **options) as duet:
        yield duet


async def show_status(args: argparse.Namespace) -> int:
    """``aioduet status``: the daemon's tasks, sources and store (an idle embedded
    framework's sources when no daemon runs)."""
    async with framework_for(args) as duet:
        status = await duet.status()
        where = duet.socket_path if isinstance(duet, Client) else None
    if args.json:
        from .daemon._protocol import status_to_json  # noqa: PLC0415

        print(json.dumps({"daemon": where, **status_to_json(status)}))
    else:
        print(_status_text(status, where))
    return 0


def _status_text(status: Status, where: str | None) -> str:
    lines = [
        f"daemon at {where}" if where else "no daemon: an embedded framework, just started",
        f"tasks: {len(status.tasks)} of {status.max_tasks}",
    ]
    for task in status.tasks:
        stats = task.statistics
        lines.append(
            f"  #{task.id} {task.name!r} {task.mask} {task.path}: {stats.pending_files} files"
            f" / {stats.pending_pages} pages pending, {stats.items_delivered} items delivered"
            + (", scanning" if stats.scanning else "")
        )
    lines.append("sources:")
    for source in status.sources:
        state = "active" if source.active else "inactive"
        lines.append(
            f"  {source.name}: {state}, {source.observations} observations, {source.lost} lost,"
            f" {source.errors} errors"
        )
    store = status.store
    lines.append(
        f"store: {store.files} files, {store.pending_pages} pending pages,"
        f" {store.memory_bytes} bytes"
    )
    return "\n".join(lines)
