"""The interface shared by the embedded framework and the daemon's client.

:func:`aioduet.open_duet` returns a :class:`Duet` that runs the sources in this process;
:func:`aioduet.connect` returns one served by ``aioduet daemon`` over a Unix socket. Code
written against these classes runs on either::

    async def backup(duet: aioduet.abc.Duet, root: str) -> None:
        async with duet.register("backup", Event.EXISTS, root) as task:
            async for item in task:
                ...
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Generator
from types import TracebackType

import anyio

from ._model import Bmap, Event, Item, Uuid
from ._status import Status, TaskStatistics

__all__ = ["DEFAULT_FETCH", "Duet", "Registration", "Task"]

#: How many items :meth:`Task.fetch` and :meth:`Task.poll` take by default.
DEFAULT_FETCH = 256


class Task(ABC):
    """A registered task: a stream of items plus Duet's bmap and get_path.

    Iterate it (``async for item in task``) or call :meth:`fetch`; items are coalesced runs of
    pages of one file, deduplicated and merged as the task's mask says: bits accumulate until
    the items are taken. Iteration ends when the task or its framework closes.
    """

    id: int
    """Unique id of the task in its framework (never reused)."""
    name: str
    """The name given at registration."""
    mask: Event
    """The registered event mask."""
    path: str
    """The registered directory (absolute, symlinks resolved)."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """Whether the task was closed (by its owner or by the framework)."""

    @abstractmethod
    def fetch_nowait(self, max_items: int = DEFAULT_FETCH) -> list[Item]:
        """Take up to ``max_items`` items that are here already, without waiting.

        Embedded, that is everything pending in the store. Over the daemon it is what has
        reached this process; when nothing has, an empty list is returned and the pending
        items are asked for in the background. :meth:`poll` asks the daemon and waits
        for its answer.

        Raises:
            ValueError: ``max_items`` is below 1.
            anyio.ClosedResourceError: the task was closed.
            anyio.EndOfStream: the framework closed and nothing is left.
            aioduet.DaemonLost: the daemon went away and nothing is left.
        """

    @abstractmethod
    async def poll(self, max_items: int = DEFAULT_FETCH) -> list[Item]:
        """Take up to ``max_items`` items pending now, possibly none; never waits for new ones.

        Raises: as :meth:`fetch_nowait`.
        """

    @abstractmethod
    async def fetch(self, max_items: int = DEFAULT_FETCH) -> list[Item]:
        """Wait for at least one item, then take up to ``max_items``.

        Raises: as :meth:`fetch_nowait`.
        """

    def __aiter__(self) -> Task:
        return self

    async def __anext__(self) -> Item:
        try:
            return (await self.fetch(1))[0]
        except (anyio.ClosedResourceError, anyio.EndOfStream):
            raise StopAsyncIteration from None

    @abstractmethod
    async def bmap(self, flags: Bmap, uuid: Uuid) -> bool:
        """Set, reset or check whether a file is *done* for this task.

        ``Bmap.SET`` marks the file done: no more items for it (items already taken but not
        yet returned are dropped). ``Bmap.RESET`` clears that. ``Bmap.CHECK`` changes nothing.

        Returns:
            After the operation: True when the file is done or irrelevant to the task (not
            under its directory), False when it is relevant and not done.

        Raises:
            ValueError: ``flags`` is not exactly one of SET, RESET and CHECK.
            TypeError: ``uuid`` is not a :class:`Uuid`.
            anyio.ClosedResourceError: the task is closed.
        """

    async def set_done(self, uuid: Uuid) -> None:
        """Mark the file done: no more items for it (``bmap(Bmap.SET, uuid)``)."""
        await self.bmap(Bmap.SET, uuid)

    async def reset_done(self, uuid: Uuid) -> None:
        """Resume items for the file (``bmap(Bmap.RESET, uuid)``)."""
        await self.bmap(Bmap.RESET, uuid)

    async def check_done(self, uuid: Uuid) -> bool:
        """True when the file is done or irrelevant (``bmap(Bmap.CHECK, uuid)``)."""
        return await self.bmap(Bmap.CHECK, uuid)

    @abstractmethod
    async def get_path(self, uuid: Uuid) -> str:
        """The path of a file under the task's directory.

        Raises:
            NotFound: the file is not under the task's directory, is unknown, or no longer
                exists at its last known path.
            TypeError: ``uuid`` is not a :class:`Uuid`.
            anyio.ClosedResourceError: the task is closed.
        """

    @abstractmethod
    async def wait_scanned(self) -> None:
        """Wait until the registration scan has enqueued what was cached at registration."""

    @abstractmethod
    def statistics(self) -> TaskStatistics:
        """The task's counters (over the daemon: as of the last answer from it)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Deregister the task; pending fetches and iterations end. Idempotent."""

    async def __aenter__(self) -> Task:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Registration(ABC):
    """What :meth:`Duet.register` returns: await it, or use it with ``async with``."""

    @abstractmethod
    def __await__(self) -> Generator[object, None, Task]: ...

    @abstractmethod
    async def __aenter__(self) -> Task: ...

    @abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Duet(ABC):
    """A framework: embedded (:func:`aioduet.open_duet`) or a daemon's (:func:`aioduet.connect`)."""

    max_tasks: int
    """The most tasks that can be registered at once."""

    @property
    @abstractmethod
    def running(self) -> bool:
        """Whether the framework is open (over the daemon: and the connection alive)."""

    @property
    @abstractmethod
    def source_names(self) -> tuple[str, ...]:
        """The sources the framework runs."""

    @abstractmethod
    def register(self, name: str, mask: int, path: str | os.PathLike[str]) -> Registration:
        """Register a task for the pages of files under ``path``.

        Await the result, or use it with ``async with`` (leaving the block deregisters).
        The name, mask and path are checked at once; see :meth:`aioduet.Duet.register`.
        """

    @abstractmethod
    async def status(self) -> Status:
        """A snapshot of the framework: tasks, sources and store."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close every task (their iterations end) and the framework or connection."""

    async def __aenter__(self) -> Duet:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
