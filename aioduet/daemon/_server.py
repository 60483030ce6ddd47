"""The daemon's server: one embedded framework served to many clients on a Unix socket.

Each connection has its own reader, writer and bounded outbox, so a client that stops
reading stalls only itself: the daemon stops reading its requests once its outbox holds
:data:`OUTBOX_LIMIT` bytes, and items stay in the store (one shared entry per page) until
the client asks for them. A frame that breaks the protocol gets an error and a closed
connection; nothing a client sends can stop the daemon or reach another client's tasks.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import stat
import struct
from collections import deque
from typing import Any

import anyio
import anyio.abc
import attrs

from .. import __version__
from .._framework import Duet
from .._model import Bmap, Uuid
from ..errors import NotFound, ProtocolError, TooManyTasks
from ..tasks import Task
from ._protocol import (
    KIND_JSON,
    MAX_FETCH,
    MAX_REQUEST,
    VERSION,
    encode_items,
    encode_json,
    error_body,
    parse_request,
    split_frames,
    status_to_json,
)
from ._unix import UnixListener, UnixStream

__all__ = ["OUTBOX_LIMIT", "Peer", "Server"]

logger = logging.getLogger("aioduet.daemon")

OUTBOX_LIMIT = 1024 * 1024
"""Bytes of replies waiting for a client beyond which the daemon stops reading its requests."""
MAX_PENDING_FDS = 4
"""File descriptors a client may have sent ahead of the register requests that use them."""
_READ = 64 * 1024


@attrs.frozen
class Peer:
    """Who is on the other end of a connection (``SO_PEERCRED``, and its groups)."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]

    @property
    def privileged(self) -> bool:
        """Root, or the daemon's own user: may see every task and stop the daemon."""
        return self.uid in (0, os.geteuid())

    @classmethod
    def of(cls, sock: socket.socket) -> Peer:
        """The credentials of the process that connected ``sock``."""
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return cls(pid, uid, gid, frozenset({gid, *_groups_of(pid)}))


def _groups_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return [int(group) for group in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


@attrs.define(eq=False)
class Server:
    """Serves ``duet`` to clients; run :meth:`serve` with a listener in a task group.

    Args:
        duet: an open embedded framework; the server registers its clients' tasks there.
        tasks_per_uid: the most tasks the clients of one unprivileged user may hold.
        max_clients: the most connections at once; more are told the daemon is busy.
        handshake_timeout: seconds a new connection has to say hello.
    """

    duet: Duet
    tasks_per_uid: int = 8
    max_clients: int = 256
    handshake_timeout: float = 10.0
    stop_requested: anyio.Event = attrs.field(factory=anyio.Event)
    """Set when a privileged client asked the daemon to stop."""
    _connections: set[_Connection] = attrs.field(init=False, factory=set)
    _owners: dict[int, int] = attrs.field(init=False, factory=dict)
    """Task id -> uid of the client that registered it."""

    @property
    def connections(self) -> int:
        """Clients connected now."""
        return len(self._connections)

    async def serve(
        self,
        listener: UnixListener,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve clients until cancelled."""
        async with anyio.create_task_group() as group:
            task_status.started()
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # out of descriptors or memory: the client waits
                    logger.warning("cannot accept a client now (%s); trying again in 0.1 s", exc)
                    await anyio.sleep(0.1)
                    continue
                group.start_soon(self._serve, stream)

    async def _serve(self, stream: UnixStream) -> None:
        async with stream:
            try:
                peer = Peer.of(stream.raw_socket)
            except OSError as exc:
                logger.warning("cannot read a client's credentials: %s", exc)
                return
            if len(self._connections) >= self.max_clients:
                logger.warning("refusing pid %d: %d clients already", peer.pid, self.max_clients)
                busy = RuntimeError(f"the daemon serves {self.max_clients} clients already")
                with anyio.move_on_after(1):
                    await stream.send(encode_json(error_body(0, busy, "busy")))
                return
            connection = _Connection(self, stream, peer)
            self._connections.add(connection)
            try:
                await connection.run()
            except Exception:  # a bug must cost one connection, never the daemon
                logger.exception("the connection of pid %d failed; it is closed", peer.pid)
            finally:
                self._connections.discard(connection)

    async def closing(self, seconds: float = 1.0) -> None:
        """Tell every client the daemon is closing, and give them ``seconds`` to hear it."""
        for connection in self._connections:
            connection.send({"event": "closing"})
        with anyio.move_on_after(seconds):
            for connection in list(self._connections):
                await connection.flushed()

    def tasks_of(self, uid: int) -> int:
        """Tasks the clients of ``uid`` hold now."""
        return sum(1 for owner in self._owners.values() if owner == uid)

    def own(self, task: Task, uid: int) -> None:
        self._owners[task.id] = uid

    def disown(self, task: Task) -> None:
        self._owners.pop(task.id, None)

    def owner(self, task_id: int) -> int | None:
        return self._owners.get(task_id)


@attrs.define(eq=False)
class _Connection:
    """One client: reads its requests in order, answers them through a bounded outbox."""

    server: Server
    stream: UnixStream
    peer: Peer
    tasks: dict[int, Task] = attrs.field(factory=dict)
    fds: list[int] = attrs.field(factory=list)
    waiting: set[int] = attrs.field(factory=set)
    """Tasks with a waiting fetch in progress (one each)."""
    outbox: deque[bytes] = attrs.field(factory=deque)
    outbox_bytes: int = 0
    wake_writer: anyio.Event = attrs.field(factory=anyio.Event)
    room: anyio.Event = attrs.field(factory=anyio.Event)
    greeted: bool = False
    group: anyio.abc.TaskGroup | None = None

    async def run(self) -> None:
        try:
            async with anyio.create_task_group() as group:
                self.group = group
                group.start_soon(self._write_forever)
                try:
                    await self._read_until_done()
                except ProtocolError as exc:
                    logger.info("client pid %d broke the protocol: %s", self.peer.pid, exc)
                    code = "version" if isinstance(exc, _WrongVersion) else None
                    self.send(error_body(0, exc, code))
                    with anyio.move_on_after(1):
                        await self.flushed()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._release()

    async def _release(self) -> None:
        """The client is gone: deregister its tasks (their store entries go), close fds."""
        for task in self.tasks.values():
            self.server.disown(task)
            await task.aclose()
        self.tasks.clear()
        for fd in self.fds:
            os.close(fd)
        self.fds.clear()

    # -- writing -----------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        self._enqueue(encode_json(message))

    def _enqueue(self, frame: bytes) -> None:
        self.outbox.append(frame)
        self.outbox_bytes += len(frame)
        self.wake_writer.set()

    async def _write_forever(self) -> None:
        while True:
            if not self.outbox:
                self.room.set()
                self.wake_writer = anyio.Event()
                await self.wake_writer.wait()
                continue
            data = b"".join(self.outbox)
            self.outbox.clear()
            try:
                await self.stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                # The client is gone. The reader may be waiting for room in a full outbox,
                # which would never come (it is emptied only here): end the connection,
                # so that its tasks are released.
                self.outbox.clear()
                self.outbox_bytes = 0
                assert self.group is not None
                self.group.cancel_scope.cancel()
                return
            self.outbox_bytes -= len(data)

    async def flushed(self) -> None:
        """Wait until the outbox is empty."""
        while self.outbox_bytes:
            self.room = anyio.Event()
            self.wake_writer.set()
            await self.room.wait()

    async def _wait_for_room(self) -> None:
        while self.outbox_bytes > OUTBOX_LIMIT:
            self.room = anyio.Event()
            await self.room.wait()

    # -- reading -----------------------------------------------------------------------

    async def _read_until_done(self) -> None:
        buffer = bytearray()
        with anyio.move_on_after(self.server.handshake_timeout) as handshake:
            while not self.greeted:
                if not await self._read_some(buffer):
                    return
        if handshake.cancelled_caught:
            raise ProtocolError(f"no hello within {self.server.handshake_timeout:g} s")
        while await self._read_some(buffer):
            pass

    async def _read_some(self, buffer: bytearray) -> bool:
        """Read once and handle the complete frames; False when the client hung up."""
        await self._wait_for_room()
        try:
            data, fds = await self.stream.receive_fds(_READ, MAX_PENDING_FDS)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        except RuntimeError as exc:  # ancillary data other than SCM_RIGHTS, or too many fds
            raise ProtocolError(f"unexpected ancillary data: {exc}") from None
        self.fds.extend(fds)
        buffer += data
        for frame in split_frames(buffer, MAX_REQUEST):
            await self._handle(frame)
        if len(self.fds) > MAX_PENDING_FDS:
            raise ProtocolError(f"more than {MAX_PENDING_FDS} file descriptors sent ahead")
        return True

    async def _handle(self, frame: bytes) -> None:
        if frame[0] != KIND_JSON:
            raise ProtocolError(f"clients send JSON frames (kind {KIND_JSON}), not kind {frame[0]}")
        request = parse_request(frame[1:])
        op, rid = request["op"], request["id"]
        if not self.greeted:
            if op != "hello":
                raise ProtocolError(f"the first request must be hello, not {op}")
            if request["version"] != VERSION:
                raise _WrongVersion(
                    f"this daemon speaks protocol version {VERSION}, not {request['version']}"
                )
            self.greeted = True
            duet = self.server.duet
            self.send(
                {
                    "id": rid,
                    "ok": {
                        "version": VERSION,
                        "daemon": __version__,
                        "max_tasks": duet.max_tasks,
                        "sources": list(duet.source_names),
                        "uid": self.peer.uid,
                    },
                }
            )
            return
        if op == "hello":
            raise ProtocolError("hello was already said")
        try:
            result = await getattr(self, f"_op_{op}")(request)
        except (ProtocolError, anyio.get_cancelled_exc_class()):
            raise
        except Exception as exc:  # an answer, not a crash: the client gets it
            self.send(error_body(rid, exc))
        else:
            if result is not _NO_REPLY:
                self.send({"id": rid, "ok": result})

    def _task(self, request: dict[str, Any]) -> Task:
        task = self.tasks.get(request["task"])
        if task is None:
            raise anyio.ClosedResourceError(f"no task {request['task']} on this connection")
        return task

    # -- operations ----------------------------------------------------------------------

    async def _op_register(self, request: dict[str, Any]) -> dict[str, Any]:
        if not self.fds:
            raise ProtocolError("register needs the directory's descriptor (SCM_RIGHTS)")
        fd = self.fds.pop(0)
        try:
            return self._register(request["name"], request["mask"], fd)
        finally:
            os.close(fd)

    def _register(self, name: str, mask: int, fd: int) -> dict[str, Any]:
        peer, server = self.peer, self.server
        if not peer.privileged and server.tasks_of(peer.uid) >= server.tasks_per_uid:
            raise TooManyTasks(
                f"user {peer.uid} holds {server.tasks_per_uid} tasks already (the daemon's"
                " --tasks-per-uid)"
            )
        path, st = _directory_of(fd)
        registration = server.duet.register(name, mask, path)
        task = registration.task
        if task._root.key[:2] != (st.st_dev, st.st_ino):  # the path was swapped meanwhile
            server.duet.release(task)
            raise PermissionError(errno.EPERM, "the directory moved during registration", path)
        self.tasks[task.id] = task
        server.own(task, peer.uid)
        assert self.group is not None
        self.group.start_soon(self._tell_scanned, task)
        return {"task": task.id, "path": task.path, "root": list(task._root.key)}

    async def _tell_scanned(self, task: Task) -> None:
        await task.wait_scanned()
        if self.tasks.get(task.id) is task:
            self.send({"event": "scanned", "task": task.id})

    async def _op_fetch(self, request: dict[str, Any]) -> object:
        task = self._task(request)
        wanted = request["max"]
        if not 1 <= wanted <= MAX_FETCH:
            raise ValueError(f"max_items must be between 1 and {MAX_FETCH}, not {wanted}")
        if not request["wait"]:
            self._send_items(request["id"], task, task.take_raw(wanted))
            return _NO_REPLY
        if task.id in self.waiting:
            raise ProtocolError(f"task {task.id} has a waiting fetch already")
        self.waiting.add(task.id)
        assert self.group is not None
        self.group.start_soon(self._fetch_waiting, request["id"], task, wanted)
        return _NO_REPLY

    async def _fetch_waiting(self, rid: int, task: Task, wanted: int) -> None:
        try:
            raw = await task.fetch_raw(wanted)
        except (anyio.ClosedResourceError, anyio.EndOfStream) as exc:
            self.send(error_body(rid, exc))
        else:
            self._send_items(rid, task, raw)
        finally:
            self.waiting.discard(task.id)

    def _send_items(
        self, rid: int, task: Task, raw: list[tuple[int, int, int, int, int, int]]
    ) -> None:
        pending = self.server.duet.store.pending_files(task._slot) if not task.closed else 0
        self._enqueue(encode_items(rid, task.id, pending, raw))

    async def _op_bmap(self, request: dict[str, Any]) -> bool:
        task = self._task(request)
        return await task.bmap(Bmap(request["flags"]), Uuid(*request["uuid"]))

    async def _op_get_path(self, request: dict[str, Any]) -> str:
        task = self._task(request)
        uuid = Uuid(*request["uuid"])
        path = await task.get_path(uuid)
        if not self.peer.privileged and not _reachable(path, task.path, self.peer):
            raise NotFound(f"no file with {uuid} is known under {task.path}")
        return path

    async def _op_close(self, request: dict[str, Any]) -> None:
        task = self.tasks.pop(request["task"], None)
        if task is not None:
            self.server.disown(task)
            await task.aclose()

    async def _op_status(self, request: dict[str, Any]) -> dict[str, Any]:
        status = await self.server.duet.status()
        if not self.peer.privileged:
            uid = self.peer.uid
            status = attrs.evolve(
                status, tasks=tuple(t for t in status.tasks if self.server.owner(t.id) == uid)
            )
        return status_to_json(status)

    async def _op_shutdown(self, request: dict[str, Any]) -> None:
        if not self.peer.privileged:
            raise PermissionError(
                errno.EPERM, f"user {self.peer.uid} may not stop the daemon (root may)"
            )
        logger.info("pid %d (uid %d) asked the daemon to stop", self.peer.pid, self.peer.uid)
        self.server.stop_requested.set()


_NO_REPLY = object()


class _WrongVersion(ProtocolError):
    """A hello in another protocol version (answered with the code ``version``)."""


def _directory_of(fd: int) -> tuple[str, os.stat_result]:
    """The path of a directory a client opened for reading, as this process sees it.

    Raises:
        PermissionError: the descriptor was opened with ``O_PATH`` (no read access proved).
        NotADirectoryError: it is not a directory.
        FileNotFoundError: the directory was deleted.
    """
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_PATH or flags & os.O_ACCMODE == os.O_WRONLY:
        raise PermissionError(errno.EACCES, "the descriptor was not opened for reading")
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "the descriptor is not a directory")
    path = os.readlink(f"/proc/self/fd/{fd}")
    if not path.startswith("/") or path.endswith(" (deleted)"):
        raise FileNotFoundError(errno.ENOENT, "the directory no longer exists", path)
    return path, st


def _reachable(path: str, root: str, peer: Peer) -> bool:
    """Whether ``peer`` may learn ``path``: search on every directory from ``root`` down to
    the file, and read on the one that holds it (mode bits; ACLs are not consulted)."""
    parts = path[len(root) :].strip("/").split("/")[:-1]
    current = root
    chain = [root]
    for part in parts:
        current = f"{current}/{part}" if current != "/" else f"/{part}"
        chain.append(current)
    try:
        for position, directory in enumerate(chain):
            st = os.stat(directory)
            if not _may(st, peer, 0o1):
                return False
            if position == len(chain) - 1 and not _may(st, peer, 0o4):
                return False
    except OSError:
        return False
    return True


def _may(st: os.stat_result, peer: Peer, bit: int) -> bool:
    if st.st_uid == peer.uid:
        return bool(st.st_mode >> 6 & bit)
    if st.st_gid in peer.groups:
        return bool(st.st_mode >> 3 & bit)
    return bool(st.st_mode & bit)
