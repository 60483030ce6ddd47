"""Listening on the daemon's socket: the socket file's life and the server around a framework."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from contextlib import AsyncExitStack
from types import TracebackType

import anyio
import anyio.abc
import attrs

from .._framework import Duet
from .._sockets import DEFAULT_SOCKET_MODE
from ..errors import AioduetError
from ._server import Server
from ._unix import listen_unix

__all__ = ["DEFAULT_SOCKET_MODE", "Serving", "serve"]

logger = logging.getLogger("aioduet.daemon")


def serve(
    duet: Duet,
    socket_path: str,
    *,
    mode: int = DEFAULT_SOCKET_MODE,
    tasks_per_uid: int = 8,
    max_clients: int = 256,
) -> Serving:
    """Serve an open framework on a Unix socket; use the result with ``async with``.

    The socket's directory is made (mode 0755) if missing. A stale socket file is replaced;
    one that a live daemon answers on is not.

    Raises (on entering):
        AioduetError: another daemon serves ``socket_path`` already, or it is no socket.
        OSError: the socket cannot be made there.
    """
    if tasks_per_uid < 1:
        raise ValueError(f"tasks_per_uid must be at least 1, not {tasks_per_uid}")
    if max_clients < 1:
        raise ValueError(f"max_clients must be at least 1, not {max_clients}")
    server = Server(duet, tasks_per_uid=tasks_per_uid, max_clients=max_clients)
    return Serving(server, os.path.abspath(socket_path), mode)


@attrs.define(eq=False)
class Serving:
    """A server listening on its socket; leaving the ``async with`` block stops it."""

    server: Server
    socket_path: str
    mode: int
    _stack: AsyncExitStack | None = attrs.field(init=False, default=None)
    _inode: tuple[int, int] | None = attrs.field(init=False, default=None)

    async def __aenter__(self) -> Serving:
        _claim(self.socket_path)
        listener = await listen_unix(self.socket_path, mode=self.mode)
        st = os.stat(self.socket_path)
        self._inode = (st.st_dev, st.st_ino)
        async with AsyncExitStack() as stack:
            stack.callback(self._unlink)
            await stack.enter_async_context(listener)
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._stop, group)
            await group.start(self.server.serve, listener)
            self._stack = stack.pop_all()
        logger.info("serving on %s (mode %o)", self.socket_path, self.mode)
        return self

    async def _stop(self, group: anyio.abc.TaskGroup) -> None:
        with anyio.CancelScope(shield=True):
            await self.server.closing()
        group.cancel_scope.cancel()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            st = os.stat(self.socket_path)
            if (st.st_dev, st.st_ino) == self._inode:
                os.unlink(self.socket_path)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()


def _claim(path: str) -> None:
    """Make the socket's directory; refuse a path a live daemon or another file holds."""
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AioduetError(f"{path} exists and is no socket: choose another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        os.unlink(path)  # stale: its daemon is gone
        return
    finally:
        probe.close()
    raise AioduetError(f"an aioduet daemon already serves {path}")
