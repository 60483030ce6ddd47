"""A registered task: a stream of items plus Duet's bmap and get_path."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Protocol, TypeVar

import anyio
import anyio.lowlevel
import attrs

from .. import _kernel
from .. import abc as _abc
from .._model import Bmap, Event, Item, Uuid
from .._paths import PathIndex, is_under
from .._status import TaskStatistics
from ..errors import NotFound
from ..store import Store

__all__ = ["RawItem", "Registration", "Task", "TaskHost"]

DEFAULT_FETCH = _abc.DEFAULT_FETCH
#: An item as plain ints, ``(dev, ino, gen, index, count, state)``: what the daemon sends.
RawItem = tuple[int, int, int, int, int, int]
_T = TypeVar("_T")
_BMAP_OPS = (Bmap.SET, Bmap.RESET, Bmap.CHECK)


class TaskHost(Protocol):
    """What a task needs from the framework that registered it."""

    @property
    def store(self) -> Store: ...

    @property
    def index(self) -> PathIndex: ...

    def release(self, task: Task) -> None:
        """Deregister the task: free its slot and scopes."""

    def locate(self, dev: int, ino: int) -> None:
        """Refresh the index's paths of an inode where the host can (file handles)."""


@attrs.define(eq=False)
class Task(_abc.Task):
    """A task registered with :meth:`aioduet.Duet.register`.

    Iterate it (``async for item in task``) or call :meth:`fetch`; items are coalesced runs of
    pages of one file, deduplicated and merged as the task's mask says. Iteration ends when
    the task is closed or the framework closes. Use it as an async context manager, or call
    :meth:`aclose`, to deregister.
    """

    id: int
    """Unique id in this framework."""
    name: str
    """The name given at registration."""
    mask: Event
    """The registered event mask."""
    path: str
    """The registered directory (absolute, symlinks resolved)."""
    _slot: int = attrs.field(alias="slot")
    _root: Uuid = attrs.field(alias="root")
    _host: TaskHost = attrs.field(alias="host")
    _buffer: deque[Item] = attrs.field(init=False, factory=deque)
    _wakeup: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _scanned: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _closed: bool = attrs.field(init=False, default=False)
    _ended: bool = attrs.field(init=False, default=False)
    _delivered: int = attrs.field(init=False, default=0)

    # -- called by the framework -----------------------------------------------------------

    def _wake(self) -> None:
        waiter, self._wakeup = self._wakeup, anyio.Event()
        waiter.set()

    def _end(self) -> None:
        """The framework closed: wake waiters; fetches drain what is left, then end."""
        self._ended = True
        self._scanned.set()
        self._wake()

    def _mark_scanned(self) -> None:
        self._scanned.set()

    @property
    def closed(self) -> bool:
        """Whether the task was closed (by its owner or by the framework)."""
        return self._closed or self._ended

    # -- items -----------------------------------------------------------------------------

    def fetch_nowait(self, max_items: int = DEFAULT_FETCH) -> list[Item]:
        """Take up to ``max_items`` pending items without waiting (possibly none).

        Raises:
            ValueError: ``max_items`` is below 1.
            anyio.ClosedResourceError: the task was closed.
            anyio.EndOfStream: the framework closed and nothing is left.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        if self._closed:
            raise anyio.ClosedResourceError
        if len(self._buffer) < max_items:
            self._refill(max_items - len(self._buffer))
        if not self._buffer:
            if self._ended:
                raise anyio.EndOfStream
            return []
        count = min(max_items, len(self._buffer))
        items = [self._buffer.popleft() for _ in range(count)]
        self._delivered += count
        return items

    def _refill(self, wanted: int) -> None:
        store = self._host.store
        if store.take_overflow(self._slot):
            self._buffer.append(Item(self._root, 0, 0, Event.OVERFLOW))
        from_key = Uuid.from_key
        self._buffer.extend(
            Item(from_key(key), index, count, Event(state))
            for key, index, count, state in store.drain(self._slot, wanted)
        )

    async def fetch(self, max_items: int = DEFAULT_FETCH) -> list[Item]:
        """Wait for at least one item, then take up to ``max_items``.

        Raises:
            ValueError: ``max_items`` is below 1.
            anyio.ClosedResourceError: the task was closed.
            anyio.EndOfStream: the framework closed and nothing is left.
        """
        return await self._when_some(self.fetch_nowait, max_items)

    async def poll(self, max_items: int = DEFAULT_FETCH) -> list[Item]:
        """Take up to ``max_items`` items pending now, possibly none (embedded: no waiting).

        Raises: as :meth:`fetch_nowait`.
        """
        await anyio.lowlevel.checkpoint()
        return self.fetch_nowait(max_items)

    def take_raw(self, max_items: int) -> list[RawItem]:
        """As :meth:`fetch_nowait`, as plain ints (no objects built): the daemon's fetch."""
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        if self._closed:
            raise anyio.ClosedResourceError
        taken: list[RawItem] = [
            (*item.uuid.key, item.index, item.count, int(item.state))
            for item in (self._buffer.popleft() for _ in range(min(max_items, len(self._buffer))))
        ]
        store = self._host.store
        if len(taken) < max_items and store.take_overflow(self._slot):
            taken.append((*self._root.key, 0, 0, int(Event.OVERFLOW)))
        if len(taken) < max_items:
            taken.extend(
                (key[0], key[1], key[2], index, count, state)
                for key, index, count, state in store.drain(self._slot, max_items - len(taken))
            )
        if not taken and self._ended:
            raise anyio.EndOfStream
        self._delivered += len(taken)
        return taken

    async def fetch_raw(self, max_items: int) -> list[RawItem]:
        """As :meth:`fetch`, as plain ints: the daemon's waiting fetch."""
        return await self._when_some(self.take_raw, max_items)

    async def _when_some(self, take: Callable[[int], list[_T]], max_items: int) -> list[_T]:
        while True:
            await anyio.lowlevel.checkpoint_if_cancelled()
            waiter = self._wakeup
            items = take(max_items)
            if items:
                await anyio.lowlevel.cancel_shielded_checkpoint()
                return items
            await waiter.wait()

    async def __anext__(self) -> Item:
        try:
            if self._buffer and not self._closed:
                await anyio.lowlevel.checkpoint_if_cancelled()
                self._delivered += 1
                item = self._buffer.popleft()
                await anyio.lowlevel.cancel_shielded_checkpoint()
                return item
            return (await self.fetch(1))[0]
        except (anyio.ClosedResourceError, anyio.EndOfStream):
            raise StopAsyncIteration from None

    # -- Duet's bitmap and paths -----------------------------------------------------------

    async def bmap(self, flags: Bmap, uuid: Uuid) -> bool:
        """Set, reset or check whether a file is *done* for this task.

        ``Bmap.SET`` marks the file done: no more items for it (buffered ones are dropped).
        ``Bmap.RESET`` clears that. ``Bmap.CHECK`` changes nothing.

        Returns:
            After the operation: True when the file is done or irrelevant to the task (not
            under its directory), False when it is relevant and not done.

        Raises:
            ValueError: ``flags`` is not exactly one of SET, RESET and CHECK.
            TypeError: ``uuid`` is not a :class:`Uuid`.
            anyio.ClosedResourceError: the task is closed.
        """
        await anyio.lowlevel.checkpoint()
        if flags not in _BMAP_OPS:
            raise ValueError(f"bmap takes exactly one of SET, RESET, CHECK, not {flags!r}")
        if not isinstance(uuid, Uuid):
            raise TypeError(f"bmap takes an aioduet.Uuid, not {type(uuid).__name__}")
        if self.closed:
            raise anyio.ClosedResourceError
        store = self._host.store
        key = uuid.key
        if flags == Bmap.SET:
            store.set_done(self._slot, key, True)
            if self._buffer:
                self._buffer = deque(item for item in self._buffer if item.uuid != uuid)
            return True
        if flags == Bmap.RESET:
            store.set_done(self._slot, key, False)
        if store.is_done(self._slot, key):
            return True
        return store.relevant(self._slot, key) is False

    async def get_path(self, uuid: Uuid) -> str:
        """The path of a file under the task's directory.

        Raises:
            NotFound: the file is not under the task's directory, is unknown, or no longer
                exists at its last known path.
            TypeError: ``uuid`` is not a :class:`Uuid`.
            anyio.ClosedResourceError: the task is closed.
        """
        await anyio.lowlevel.checkpoint()
        if not isinstance(uuid, Uuid):
            raise TypeError(f"get_path takes an aioduet.Uuid, not {type(uuid).__name__}")
        if self.closed:
            raise anyio.ClosedResourceError
        if uuid == self._root:
            return self.path
        for attempt in range(2):
            candidates = [
                path
                for path in self._host.index.paths(uuid.dev, uuid.ino)
                if is_under(path, self.path)
            ]
            for path in candidates:
                if _is_same_file(path, uuid):
                    return path
            if attempt == 0:
                self._host.locate(uuid.dev, uuid.ino)  # by file handle, where it can
        if not candidates:
            raise NotFound(f"no file with {uuid} is known under {self.path}")
        raise NotFound(f"the file with {uuid} no longer exists under {self.path}")

    # -- lifetime --------------------------------------------------------------------------

    async def wait_scanned(self) -> None:
        """Wait until the registration scan has enqueued what was cached at registration."""
        await self._scanned.wait()

    def statistics(self) -> TaskStatistics:
        """The task's counters."""
        store = self._host.store
        live = not self.closed
        return TaskStatistics(
            pending_files=store.pending_files(self._slot) if live else 0,
            pending_pages=store.pending_pages(self._slot) if live else 0,
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
                self._host.release(self)
            self._scanned.set()
            self._wake()
        await anyio.lowlevel.checkpoint()


def _is_same_file(path: str, uuid: Uuid) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) != (uuid.dev, uuid.ino):
        return False
    if not uuid.gen:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return True  # cannot read the generation: dev and ino agree
    try:
        return _kernel.inode_generation(fd) == uuid.gen
    finally:
        os.close(fd)


@attrs.define(eq=False)
class Registration(_abc.Registration):
    """What :meth:`aioduet.Duet.register` returns: await it, or use it with ``async with``."""

    task: Task

    def __await__(self) -> Generator[object, None, Task]:
        return self._ready().__await__()

    async def _ready(self) -> Task:
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException:
            # The caller is cancelled and never gets the task: nobody could close it, and it
            # would hold its slot and scopes until the framework closes.
            await self.task.aclose()
            raise
        return self.task

    async def __aenter__(self) -> Task:
        return self.task

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.task.aclose()
