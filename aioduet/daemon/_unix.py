"""Unix stream sockets for the daemon and its clients, on raw non-blocking sockets.

anyio's own Unix streams (4.16) wait for a ready socket on a future that the event loop's
reader callback completes with ``future.set_result``. On asyncio, when the waiting task is
cancelled in the same loop iteration in which its socket became ready, that callback still
runs, on a cancelled future, and the loop reports ``InvalidStateError``: a client closing
while the daemon's answer arrived did it in CI. :func:`anyio.wait_readable` and
:func:`anyio.wait_writable` guard that case, so the streams here wait with them; on trio
they are trio's own waits.

The streams keep anyio's exceptions: :class:`anyio.EndOfStream` when the peer hung up,
:class:`anyio.ClosedResourceError` after :meth:`UnixStream.aclose` (a task waiting then wakes
with it), :class:`anyio.BrokenResourceError` when the socket failed.
"""

from __future__ import annotations

import array
import errno
import os
import socket
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import anyio
import anyio.lowlevel
import attrs

__all__ = ["UnixListener", "UnixStream", "connect_unix", "listen_unix"]

_CONNECT_RETRY = 0.01
"""Seconds between connection attempts while the listener's backlog is full."""

_FD_SIZE = array.array("i").itemsize


@attrs.define(eq=False)
class _Socket:
    """A non-blocking socket that ``async with`` closes; closing wakes the tasks waiting on
    it, with ClosedResourceError (the socket file of a listener stays: its owner removes it).
    """

    raw_socket: socket.socket
    _closed: bool = attrs.field(init=False, default=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the socket; tasks waiting on it raise ClosedResourceError."""
        if not self._closed:
            self._closed = True
            anyio.notify_closing(self.raw_socket)
            self.raw_socket.close()
        await anyio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError


@attrs.define(eq=False)
class UnixStream(_Socket):
    """One connected Unix stream socket."""

    async def receive(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` bytes, waiting until some arrive."""
        data, _fds = await self._receive(max_bytes, 0)
        return data

    async def receive_fds(self, max_bytes: int, max_fds: int) -> tuple[bytes, list[int]]:
        """Up to ``max_bytes`` bytes and the file descriptors sent with them (close-on-exec).

        Raises:
            RuntimeError: the peer sent other ancillary data, or more than ``max_fds``
                descriptors at once; the descriptors that came are closed.
        """
        if max_fds < 1:
            raise ValueError(f"max_fds must be at least 1, not {max_fds}")
        return await self._receive(max_bytes, max_fds)

    async def _receive(self, max_bytes: int, max_fds: int) -> tuple[bytes, list[int]]:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        await anyio.lowlevel.checkpoint()
        while True:
            self._check_open()
            try:
                if not max_fds:
                    data = self.raw_socket.recv(max_bytes)
                    if not data:
                        raise anyio.EndOfStream
                    return data, []
                data, ancillary, flags, _address = self.raw_socket.recvmsg(
                    max_bytes, socket.CMSG_SPACE(max_fds * _FD_SIZE), socket.MSG_CMSG_CLOEXEC
                )
            except BlockingIOError:
                await anyio.wait_readable(self.raw_socket)
                continue
            except OSError as exc:
                raise self._failed(exc) from exc
            if not data and not ancillary:
                raise anyio.EndOfStream
            return data, _descriptors(ancillary, flags, max_fds)

    async def send(self, data: bytes) -> None:
        """Send all of ``data``, waiting while the socket's buffer is full."""
        await anyio.lowlevel.checkpoint()
        await self._send_rest(memoryview(data))

    async def send_fds(self, data: bytes, fds: Sequence[int]) -> None:
        """Send ``data`` with ``fds`` attached to its first byte (the caller keeps its fds)."""
        if not data or not fds:
            raise ValueError("send_fds needs at least one byte and one file descriptor")
        await anyio.lowlevel.checkpoint()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
        while True:
            self._check_open()
            try:
                sent = self.raw_socket.sendmsg([data], rights)
            except BlockingIOError:
                await anyio.wait_writable(self.raw_socket)
                continue
            except OSError as exc:
                raise self._failed(exc) from exc
            break
        await self._send_rest(memoryview(data)[sent:])

    async def _send_rest(self, view: memoryview) -> None:
        while view:
            self._check_open()
            try:
                sent = self.raw_socket.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self.raw_socket)
                continue
            except OSError as exc:
                raise self._failed(exc) from exc
            view = view[sent:]

    def _failed(self, exc: OSError) -> Exception:
        if self._closed:
            return anyio.ClosedResourceError()
        return anyio.BrokenResourceError(f"the Unix socket failed: {exc}")


def _descriptors(ancillary: list[tuple[int, int, bytes]], flags: int, max_fds: int) -> list[int]:
    """The descriptors in ``recvmsg``'s ancillary data; all are closed if any is unwelcome."""
    fds = array.array("i")
    unexpected = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
        else:
            unexpected.append((level, kind))
    problem = None
    if unexpected:
        problem = f"ancillary data other than file descriptors: (level, type) {unexpected}"
    elif flags & socket.MSG_CTRUNC:
        problem = f"more than {max_fds} file descriptors at once"
    if problem is not None:
        for fd in fds:
            os.close(fd)
        raise RuntimeError(f"the peer sent {problem}")
    return list(fds)


@attrs.define(eq=False)
class UnixListener(_Socket):
    """A listening Unix socket."""

    async def accept(self) -> UnixStream:
        """The next client's connection, waiting for one.

        Raises:
            anyio.ClosedResourceError: the listener is closed.
            OSError: the process or system is out of descriptors or memory (EMFILE,
                ENFILE, ENOBUFS, ENOMEM); the connection stays queued for a later try.
        """
        await anyio.lowlevel.checkpoint()
        while True:
            self._check_open()
            try:
                client, _address = self.raw_socket.accept()
            except BlockingIOError:
                await anyio.wait_readable(self.raw_socket)
                continue
            except ConnectionAbortedError:  # the client gave up before we took it
                continue
            except OSError as exc:
                if self._closed or exc.errno == errno.EBADF:
                    raise anyio.ClosedResourceError from None
                raise
            client.setblocking(False)
            return UnixStream(client)


async def listen_unix(path: str, *, mode: int, backlog: int = 4096) -> UnixListener:
    """Listen on a new socket file at ``path`` with permissions ``mode``.

    ``path`` must not exist (the caller decides what may be replaced).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = False
    try:
        sock.setblocking(False)
        sock.bind(path)
        bound = True
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        if bound:
            os.unlink(path)
        raise
    await anyio.lowlevel.checkpoint()
    return UnixListener(sock)


async def connect_unix(path: str) -> UnixStream:
    """Connect to the Unix socket at ``path``.

    Raises:
        OSError: nothing listens there (ECONNREFUSED, ENOENT) or it may not be reached.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        while True:
            try:
                sock.connect(path)
            except BlockingIOError:  # the listener's backlog is full (Linux says EAGAIN)
                await anyio.sleep(_CONNECT_RETRY)
                continue
            break
    except BaseException:
        sock.close()
        raise
    await anyio.lowlevel.checkpoint()
    return UnixStream(sock)
