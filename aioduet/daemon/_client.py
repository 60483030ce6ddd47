"""The daemon's client: :func:`aioduet.connect` gives the embedded interface over a socket."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Generator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from .. import abc as _abc
from .._framework import checked_directory, validate_mask
from .._model import Bmap, Event, Item, Uuid
from .._sockets import find_socket
from .._status import Status, TaskStatistics
from ..errors import DaemonLost, DaemonUnavailable, ProtocolError
from ..store import StoreStatistics
from ._protocol import (
    KIND_ITEMS,
    KIND_JSON,
    MAX_FETCH,
    MAX_REPLY,
    VERSION,
    decode_items,
    encode_json,
    error_from,
    split_frames,
    status_from_json,
)
from ._unix import UnixStream, connect_unix

__all__ = ["Client", "RemoteRegistration", "RemoteTask", "connect"]

logger = logging.getLogger("aioduet.client")

_BMAP_OPS = (Bmap.SET, Bmap.RESET, Bmap.CHECK)
HELLO_TIMEOUT = 10.0


def connect(path: str | os.PathLike[str] | None = None) -> Client:
    """A client of the aioduet daemon; use it with ``async with``.

    It has the interface of :func:`aioduet.open_duet`'s framework (:class:`aioduet.abc.Duet`):
    the daemon's sources and store serve every client, so tools in several processes share
    one store and piggy-back on each other.

    Args:
        path: the daemon's socket. Default: ``$AIODUET_SOCKET``, else the user's own daemon
            (``$XDG_RUNTIME_DIR/aioduet.sock``) if it runs, else the system daemon
            (``/run/aioduet/aioduet.sock``).

    Entering raises :class:`aioduet.DaemonUnavailable` when no daemon answers there.
    """
    chosen = find_socket() if path is None else os.fspath(path)
    if not isinstance(chosen, str):
        raise TypeError(f"path must be a str or os.PathLike[str], not {type(chosen).__name__}")
    return Client(chosen)


@attrs.define(eq=False)
class _Call:
    op: str
    done: anyio.Event = attrs.field(factory=anyio.Event)
    result: Any = None
    error: BaseException | None = None
    abandoned: bool = False
    adopt: Callable[[Any], Any] | None = None
    """Turns a successful answer into the result, as soon as it is read."""

    def finish(self, result: Any, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.done.set()


@attrs.define(eq=False)
class Client(_abc.Duet):
    """A connection to the daemon; make one with :func:`aioduet.connect`."""

    socket_path: str
    """The socket this client connects to."""
    max_tasks: int = attrs.field(init=False, default=0)
    _sources: tuple[str, ...] = attrs.field(init=False, default=())
    _stream: UnixStream | None = attrs.field(init=False, default=None)
    _stack: AsyncExitStack | None = attrs.field(init=False, default=None)
    _group: anyio.abc.TaskGroup | None = attrs.field(init=False, default=None)
    _calls: dict[int, _Call] = attrs.field(init=False, factory=dict)
    _ids: itertools.count[int] = attrs.field(init=False, factory=lambda: itertools.count(1))
    _outbox: deque[tuple[bytes, int | None]] = attrs.field(init=False, factory=deque)
    _wake_writer: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _tasks: dict[int, RemoteTask] = attrs.field(init=False, factory=dict)
    _state: str = attrs.field(init=False, default="new")
    _lost: DaemonLost | None = attrs.field(init=False, default=None)

    # -- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        if self._state != "new":
            raise RuntimeError("a client can be opened only once")
        try:
            stream = await connect_unix(self.socket_path)
        except OSError as exc:
            raise DaemonUnavailable(
                f"no aioduet daemon answers at {self.socket_path}: {exc.strerror or exc}"
                " (start one with `aioduet daemon`)"
            ) from None
        self._state = "open"
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(stream)
            self._stream = stream
            self._group = await stack.enter_async_context(anyio.create_task_group())
            stack.push_async_callback(self._stop)
            self._group.start_soon(self._read_forever)
            self._group.start_soon(self._write_forever)
            with anyio.fail_after(HELLO_TIMEOUT):
                hello = await self._call({"op": "hello", "version": VERSION})
            self.max_tasks = int(hello["max_tasks"])
            self._sources = tuple(hello["sources"])
            self._stack = stack.pop_all()
        return self

    async def _stop(self) -> None:
        assert self._group is not None
        self._group.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Close every task (their iterations end) and the connection."""
        if self._state == "new" or (self._state == "closed" and self._stack is None):
            return
        if self._state == "open":
            self._state = "closed"
        for task in self._tasks.values():
            task._end()
        self._tasks.clear()
        self._fail_calls(anyio.ClosedResourceError())
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._close_queued_fds()

    @property
    def running(self) -> bool:
        """Whether the connection is open and the daemon serving it."""
        return self._state == "open"

    @property
    def source_names(self) -> tuple[str, ...]:
        """The sources the daemon runs."""
        return self._sources

    # -- requests --------------------------------------------------------------------------

    def _send(self, message: dict[str, Any], fd: int | None = None) -> int:
        """Queue a request; returns its id."""
        rid = next(self._ids)
        self._outbox.append((encode_json({**message, "id": rid}), fd))
        self._wake_writer.set()
        return rid

    def _check_open(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self._state != "open":
            raise anyio.ClosedResourceError("the connection to the daemon is closed")

    async def _call(
        self,
        message: dict[str, Any],
        fd: int | None = None,
        *,
        adopt: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Send a request and wait for its answer (raised as an exception if an error)."""
        try:
            self._check_open()
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        call = _Call(message["op"], adopt=adopt)
        self._calls[self._send(message, fd)] = call
        try:
            await call.done.wait()
        except BaseException:
            call.abandoned = True
            if call.done.is_set() and call.error is None and isinstance(call.result, RemoteTask):
                # Answered and adopted, but the caller was cancelled before it resumed: it
                # never gets the task, so the daemon must not keep it.
                self._forget(call.result)
            raise
        if call.error is not None:
            raise call.error
        return call.result

    async def _write_forever(self) -> None:
        assert self._stream is not None
        stream = self._stream
        while True:
            if not self._outbox:
                self._wake_writer = anyio.Event()
                await self._wake_writer.wait()
                continue
            frame, fd = self._outbox.popleft()
            try:
                if fd is None:
                    frames = [frame]
                    while self._outbox and self._outbox[0][1] is None:
                        frames.append(self._outbox.popleft()[0])
                    await stream.send(b"".join(frames))
                else:
                    try:
                        await stream.send_fds(frame, [fd])
                    finally:
                        os.close(fd)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self._lose("the daemon's socket broke while sending")
                return

    def _close_queued_fds(self) -> None:
        while self._outbox:
            _frame, fd = self._outbox.popleft()
            if fd is not None:
                os.close(fd)

    async def _read_forever(self) -> None:
        assert self._stream is not None
        buffer = bytearray()
        reason = "the daemon closed the connection"
        try:
            while True:
                try:
                    data = await self._stream.receive(256 * 1024)
                except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    break
                buffer += data
                for frame in split_frames(buffer, MAX_REPLY):
                    self._dispatch(frame)
        except ProtocolError as exc:
            reason = f"the daemon sent a malformed frame: {exc}"
        except (KeyError, TypeError, ValueError) as exc:  # a well-framed answer of the wrong shape
            reason = f"the daemon sent a malformed answer: {type(exc).__name__}: {exc}"
        self._lose(reason)

    def _dispatch(self, frame: bytes) -> None:
        if frame[0] == KIND_ITEMS:
            batch = decode_items(frame[1:])
            task = self._tasks.get(batch.task)
            call = self._calls.get(batch.request)
            if task is not None:
                task._receive(batch.items, batch.pending_files, waited=call is None)
            self._answer(batch.request, None, None)
            return
        if frame[0] != KIND_JSON:
            raise ProtocolError(f"a frame of unknown kind {frame[0]}")
        try:
            message = json.loads(frame[1:])
        except ValueError:
            raise ProtocolError("a reply that is no JSON") from None
        if not isinstance(message, dict):
            raise ProtocolError("a reply that is no JSON object")
        event = message.get("event")
        if event is not None:
            self._event(event, message)
        elif "error" in message:
            self._answer(message.get("id"), None, error_from(message["error"]))
        else:
            self._answer(message.get("id"), message.get("ok"), None)

    def _answer(self, rid: object, result: Any, error: BaseException | None) -> None:
        if rid == 0 and error is not None:  # about the connection, which the daemon closes
            logger.error("the daemon refused this client: %s", error)
            self._lose(f"the daemon hung up: {error}")
            return
        call = self._calls.pop(rid, None) if isinstance(rid, int) else None
        if call is None:
            return
        if call.abandoned and call.op == "register" and error is None:
            # Its caller was cancelled after the daemon registered it: undo that.
            self._send({"op": "close", "task": result["task"]})
        elif call.adopt is not None and error is None:
            result = call.adopt(result)
        call.finish(result, error)

    def _event(self, event: object, message: dict[str, Any]) -> None:
        if event == "closing":
            self._state = "closed" if self._state == "open" else self._state
            for task in self._tasks.values():
                task._end()
        elif event == "scanned":
            scanned = self._tasks.get(message.get("task"))  # type: ignore[arg-type]
            if scanned is not None:
                scanned._scanned.set()

    def _fail_calls(self, error: BaseException) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            call.finish(None, error)

    def _lose(self, reason: str) -> None:
        """The connection ended: waiters wake with DaemonLost (or EndOfStream if it closed)."""
        if self._state == "open":
            self._state = "lost"
            self._lost = DaemonLost(f"lost the aioduet daemon at {self.socket_path}: {reason}")
            logger.warning("%s", self._lost)
        self._fail_calls(self._lost or anyio.ClosedResourceError())
        for task in self._tasks.values():
            task._end(self._lost)

    # -- tasks -----------------------------------------------------------------------------

    def register(self, name: str, mask: int, path: str | os.PathLike[str]) -> RemoteRegistration:
        """Register a task with the daemon for the pages of files under ``path``.

        The name, mask and path are checked at once, as :meth:`aioduet.Duet.register` does;
        the daemon registers the task when the result is awaited or entered. This process
        opens the directory and passes the descriptor to the daemon: that proves it may
        watch it.

        Raises:
            TypeError, ValueError, FileNotFoundError, NotADirectoryError: at once, as
                :meth:`aioduet.Duet.register`.
            PermissionError: when awaited, this process cannot open the directory.
            TooManyTasks: when awaited, the daemon or this user's quota is full.
            DaemonLost: when awaited, the connection broke.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        event = validate_mask(mask)
        root = checked_directory(path)
        return RemoteRegistration(self, name, event, root)

    async def _register(self, name: str, mask: Event, root: str) -> RemoteTask:
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError as exc:
            raise PermissionError(
                exc.errno,
                f"cannot open {root} ({exc.strerror}); the daemon watches only directories"
                " its client can open",
                root,
            ) from None

        def adopt(answer: Any) -> RemoteTask:
            # When the answer is read, not when the caller resumes: the "scanned" event
            # may come in the same read.
            root_uuid = Uuid(*answer["root"])
            task = RemoteTask(
                answer["task"], name, mask, answer["path"], root=root_uuid, client=self
            )
            self._tasks[task.id] = task
            return task

        task: RemoteTask = await self._call(
            {"op": "register", "name": name, "mask": int(mask)}, fd, adopt=adopt
        )
        return task

    def _forget(self, task: RemoteTask) -> None:
        if self._tasks.pop(task.id, None) is task and self._state == "open":
            self._send({"op": "close", "task": task.id})

    async def status(self) -> Status:
        """The daemon's status; a client that is not root sees only its user's tasks.

        Once the connection is closed or lost: a status that is not running, with no tasks.
        """
        await anyio.lowlevel.checkpoint()
        if self._state != "open":
            return Status(False, self.max_tasks, (), (), StoreStatistics(0, 0, 0, 0))
        status = status_from_json(await self._call({"op": "status"}))
        for listed in status.tasks:
            task = self._tasks.get(listed.id)
            if task is not None:
                task._pending_pages = listed.statistics.pending_pages
        return status

    async def shutdown(self) -> None:
        """Ask the daemon to stop (root, or the daemon's own user, may).

        Raises:
            PermissionError: this user may not stop the daemon.
        """
        await self._call({"op": "shutdown"})


@attrs.define(eq=False)
class RemoteRegistration(_abc.Registration):
    """What :meth:`Client.register` returns: await it, or use it with ``async with``."""

    client: Client
    name: str
    mask: Event
    path: str
    _task: RemoteTask | None = attrs.field(init=False, default=None)

    def __await__(self) -> Generator[object, None, RemoteTask]:
        return self._ready().__await__()

    async def _ready(self) -> RemoteTask:
        if self._task is None:
            self._task = await self.client._register(self.name, self.mask, self.path)
        return self._task

    async def __aenter__(self) -> RemoteTask:
        return await self._ready()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            await self._task.aclose()


@attrs.define(eq=False)
class RemoteTask(_abc.Task):
    """A task the daemon runs for this client (see :class:`aioduet.abc.Task`).

    Items come in batches: a fetch asks the daemon for up to ``max(max_items, 256)`` and
    keeps what it does not return for the next call.
    """

    id: int
    name: str
    mask: Event
    path: str
    _root: Uuid = attrs.field(alias="root")
    _client: Client = attrs.field(alias="client")
    _buffer: deque[Item] = attrs.field(init=False, factory=deque)
    _changed: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _scanned: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _waiting: bool = attrs.field(init=False, default=False)
    _closed: bool = attrs.field(init=False, default=False)
    _ended: bool = attrs.field(init=False, default=False)
    _lost: DaemonLost | None = attrs.field(init=False, default=None)
    _delivered: int = attrs.field(init=False, default=0)
    _pending_files: int = attrs.field(init=False, default=0)
    _pending_pages: int = attrs.field(init=False, default=0)

    # -- called by the client --------------------------------------------------------------

    def _wake(self) -> None:
        waiter, self._changed = self._changed, anyio.Event()
        waiter.set()

    def _receive(self, items: list[Item], pending_files: int, *, waited: bool) -> None:
        if waited:
            self._waiting = False
        if not self._closed:
            self._buffer.extend(items)
            self._pending_files = pending_files
        self._wake()

    def _end(self, lost: DaemonLost | None = None) -> None:
        self._ended = True
        self._lost = lost
        self._scanned.set()
        self._wake()

    @property
    def closed(self) -> bool:
        """Whether the task was closed (by its owner, the daemon, or a broken connection)."""
        return self._closed or self._ended

    # -- items -----------------------------------------------------------------------------

    def _take(self, max_items: int) -> list[Item]:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        if self._closed:
            raise anyio.ClosedResourceError
        if self._buffer:
            count = min(max_items, len(self._buffer))
            self._delivered += count
            return [self._buffer.popleft() for _ in range(count)]
        if self._lost is not None:
            raise self._lost
        if self._ended:
            raise anyio.EndOfStream
        return []

    def fetch_nowait(self, max_items: int = _abc.DEFAULT_FETCH) -> list[Item]:
        """Take up to ``max_items`` items that have reached this process (see the interface)."""
        items = self._take(max_items)
        if not items and not self._waiting:
            # A waiting fetch: the daemon answers once there is something, never empty.
            self._waiting = True
            self._ask(max(max_items, _abc.DEFAULT_FETCH), wait=True)
        return items

    async def poll(self, max_items: int = _abc.DEFAULT_FETCH) -> list[Item]:
        """Ask the daemon for up to ``max_items`` pending items; return without waiting for more."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if len(self._buffer) < max_items and not self.closed:
            # A closed or lost connection is reported by _take, after what is buffered.
            with contextlib.suppress(anyio.ClosedResourceError, anyio.EndOfStream, DaemonLost):
                await self._client._call(self._request(max_items - len(self._buffer), False))
        return self._take(max_items)

    async def fetch(self, max_items: int = _abc.DEFAULT_FETCH) -> list[Item]:
        """Wait for at least one item, then take up to ``max_items``."""
        while True:
            await anyio.lowlevel.checkpoint_if_cancelled()
            waiter = self._changed
            items = self._take(max_items)
            if items:
                await anyio.lowlevel.cancel_shielded_checkpoint()
                return items
            if not self._waiting:
                self._waiting = True
                self._ask(max(max_items, _abc.DEFAULT_FETCH), wait=True)
            await waiter.wait()

    def _request(self, max_items: int, wait: bool) -> dict[str, Any]:
        return {"op": "fetch", "task": self.id, "max": min(max_items, MAX_FETCH), "wait": wait}

    def _ask(self, max_items: int, *, wait: bool) -> None:
        if self._client._state == "open":
            self._client._send(self._request(max_items, wait))

    # -- Duet's bitmap and paths -----------------------------------------------------------

    async def bmap(self, flags: Bmap, uuid: Uuid) -> bool:
        """Set, reset or check whether a file is *done* for this task (see the interface)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if flags not in _BMAP_OPS:
            raise ValueError(f"bmap takes exactly one of SET, RESET, CHECK, not {flags!r}")
        if not isinstance(uuid, Uuid):
            raise TypeError(f"bmap takes an aioduet.Uuid, not {type(uuid).__name__}")
        self._check_open()
        request = {"op": "bmap", "task": self.id, "flags": int(flags), "uuid": list(uuid.key)}
        # Waited for, SET included: a SET that did not wait let tools run ahead of the items
        # that tell them what the others cached (bench/piggyback.py read 2x the data).
        answer = bool(await self._client._call(request))
        if flags == Bmap.SET and self._buffer:
            self._buffer = deque(item for item in self._buffer if item.uuid != uuid)
        return answer

    async def get_path(self, uuid: Uuid) -> str:
        """The path of a file under the task's directory (see the interface)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(uuid, Uuid):
            raise TypeError(f"get_path takes an aioduet.Uuid, not {type(uuid).__name__}")
        self._check_open()
        if uuid == self._root:
            return self.path
        answer = await self._client._call(
            {"op": "get_path", "task": self.id, "uuid": list(uuid.key)}
        )
        return str(answer)

    def _check_open(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._lost is not None:
            raise self._lost
        if self._ended:
            raise anyio.ClosedResourceError

    # -- lifetime --------------------------------------------------------------------------

    async def wait_scanned(self) -> None:
        """Wait until the registration scan has enqueued what was cached at registration."""
        await self._scanned.wait()

    def statistics(self) -> TaskStatistics:
        """The task's counters: ``pending_files`` as of the last batch from the daemon,
        ``pending_pages`` as of the last ``status()``."""
        return TaskStatistics(
            pending_files=0 if self.closed else self._pending_files,
            pending_pages=0 if self.closed else self._pending_pages,
            buffered_items=len(self._buffer),
            items_delivered=self._delivered,
            scanning=not self._scanned.is_set(),
        )

    async def aclose(self) -> None:
        """Deregister the task; pending fetches and iterations end. Idempotent."""
        if not self._closed:
            self._closed = True
            self._buffer.clear()
            if not self._ended:
                self._client._forget(self)
            self._scanned.set()
            self._wake()
        await anyio.lowlevel.checkpoint()
