"""What every source is given (a :class:`Sink`) and offers (the :class:`Source` protocol)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import anyio
import anyio.abc
import attrs

from .._paths import PathIndex
from .._status import SourceStatus
from ..store import Observation, Store

__all__ = ["Introduction", "PathNote", "Sink", "Source"]


class Introduction(Protocol):
    """The receiving end of a registration scan, for one new task.

    Until the scan covers a file, the new task is not told of the file's changes at all; from
    then on it is, like every other task. So, for each batch, a source calls :meth:`cover`
    with the files it checked, then hands its usual observations to the sink, then calls
    :meth:`deliver` with the rest of those files' current state: the task hears of every
    cached page exactly once.
    """

    def cover(self, inodes: Iterable[tuple[int, int]]) -> None:
        """The scan has reached these ``(dev, ino)``."""

    def deliver(self, observations: Sequence[Observation]) -> None:
        """The current state of covered files that no observation announced."""


PathNote = tuple[int, int, int, str]
"""``(dev, ino, nlink, path)``: a source saw this file at this path."""


@attrs.define(eq=False)
class Sink:
    """Where sources hand their findings: the store and the path index, on the event loop.

    Sources that work in threads return their batches to a coroutine, which calls these
    methods; none of them may be called from another thread.
    """

    store: Store
    index: PathIndex

    def learn(self, notes: Iterable[PathNote]) -> list[tuple[int, int]]:
        """Record paths; returns the ``(dev, ino)`` of files whose known paths changed.

        The source must pass each of those to :meth:`relocate` with the file's state.
        """
        index = self.index
        moved: list[tuple[int, int]] = []
        for dev, ino, nlink, path in notes:
            known = (dev, ino) in index
            if index.add(dev, ino, path, nlink) and known:
                moved.append((dev, ino))
        return moved

    def relocate(self, dev: int, ino: int, present: Sequence[tuple[int, int, int]]) -> None:
        """A file's path changed: tasks whose scope it left or entered hear of ``present``.

        ``present`` is its current state as ``(first page, count, ADDED or DIRTY)`` runs.
        """
        for key in self.store.keys_of(dev, ino):
            self.store.relocate(key, present)

    def unlearn(self, dev: int, ino: int, path: str | None = None) -> None:
        """The file is no longer at ``path`` (or anywhere, when ``path`` is None)."""
        self.index.discard(dev, ino, path)
        for key in self.store.keys_of(dev, ino):
            self.store.forget_relevance(key)

    def ingest(self, observations: Iterable[Observation]) -> None:
        """Hand observations to every task they are relevant to."""
        self.store.ingest(observations)


class Source(Protocol):
    """A kernel interface translated into observations for the store."""

    @property
    def name(self) -> str:
        """The name that ``open_duet(sources=[...])`` and ``status()`` use."""
        ...

    def add_scope(self, root: str) -> None:
        """Start watching the tree under ``root`` (absolute, resolved)."""

    def remove_scope(self, root: str) -> None:
        """Stop watching ``root`` (once per add_scope)."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Observe until cancelled."""

    async def introduce(self, root: str, intro: Introduction) -> None:
        """Scan ``root`` for a new task and tell it what is cached there (see Introduction)."""

    def status(self) -> SourceStatus:
        """Counters for ``status()``."""
        ...
