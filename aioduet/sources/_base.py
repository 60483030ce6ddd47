"""What every source is given (a :class:`Sink`) and offers (the :class:`Source` protocol)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import anyio
import anyio.abc
import attrs

from .._paths import PathHints, PathIndex
from .._status import SourceStatus
from ..store import Observation, Store

__all__ = ["Checker", "Introduction", "PathNote", "Sink", "Source"]


class Introduction(Protocol):
    """The receiving end of a registration scan, for one new task.

    Until the scan covers a file, the new task is not told of the file's changes at all; from
    then on it is, like every other task. So, for each batch, a source calls :meth:`cover`
    with the files it checked, then hands its usual observations to the sink for every task
    but :attr:`slot`, then calls :meth:`deliver` with those files' current state: the task
    hears of every cached page exactly once, and never of a change from a state it was not
    told (a REMOVED it never had the ADDED of would cancel the ADDED of the next read).
    """

    @property
    def slot(self) -> int:
        """The new task's slot in the store."""

    def looking(self) -> None:
        """A batch of the scan is about to look at files (in a worker thread)."""

    def cover(self, inodes: Iterable[tuple[int, int]]) -> None:
        """The scan has reached these ``(dev, ino)``."""

    def deliver(self, observations: Sequence[Observation]) -> None:
        """The current state of covered files, for the new task only."""


PathNote = tuple[int, int, int, str]
"""``(dev, ino, nlink, path)``: a source saw this file at this path."""


class Checker(Protocol):
    """What hint sources (inotify, writeback) ask of the residency scanner, through the sink.

    Every method only records the request and returns at once; the scanner does the work
    on its own schedule (hints promptly, ahead of its periodic sweep).
    """

    def check_paths(self, paths: Iterable[str]) -> None:
        """These files may have changed (read, written, created, moved in): check them now."""

    def check_tree(self, path: str) -> None:
        """A directory appeared (created or moved in): check every file below it."""

    def path_gone(self, path: str) -> None:
        """``path`` (a file or a directory) was deleted or moved out of every watched tree."""

    def path_moved(self, old: str, new: str) -> None:
        """``old`` (a file or a directory) was renamed to ``new``, both in watched trees."""

    def check_dirty(self) -> None:
        """Writeback progressed: check the files known to hold dirty or writeback pages."""

    def rescan(self, root: str | None) -> None:
        """Observations under ``root`` (every scope when None) were lost: rescan it all."""

    def cut(self, dev: int, ino: int, end: int) -> None:
        """The file was cut short to ``end`` pages: report its known pages from there on gone
        (a large folio straddling the new end stays whole in the cache, and no event says
        that its pages past the end left the file)."""


def _no_overflow(root: str | None) -> None:
    """The default overflow signal of a sink outside a framework: nobody to tell."""


@attrs.define(eq=False)
class Sink:
    """Where sources hand their findings: the store and the path index, on the event loop.

    Sources that work in threads return their batches to a coroutine, which calls these
    methods; none of them may be called from another thread.

    Hint sources reach the residency scanner through :meth:`checker`; a source that lost
    observations calls :meth:`lost`.
    """

    store: Store
    index: PathIndex
    overflow: Callable[[str | None], None] = _no_overflow
    """Signals OVERFLOW to the tasks whose scope overlaps a root (all tasks for None)."""
    path_hints: PathHints | None = attrs.field(default=None, init=False)
    """Paths walks saw for uncached files, when a source names inodes only (exact set)."""
    settlers: list[Callable[[], None]] = attrs.field(factory=list, init=False)
    """Event sources' ways to take in, at once, what the kernel has queued so far."""
    inode_listeners: list[Callable[[int, int], None]] = attrs.field(factory=list, init=False)
    """Told ``(dev, ino)`` when an inode number is learnt anew or unlearnt: its number may
    now name another inode (a new generation), so what was cached of it is stale."""
    dirty_listeners: list[Callable[[Sequence[Observation]], None]] = attrs.field(
        factory=list, init=False
    )
    """Told of the DIRTY pages a scan found (:meth:`scanned_dirty`): the exact source, which
    reports their writeback only for pages it knows to be dirty."""
    _checker: Checker | None = attrs.field(default=None, init=False)
    _mirror: Callable[[Sequence[Observation]], None] | None = attrs.field(default=None, init=False)
    known_state: Callable[[int, int], list[Observation]] | None = attrs.field(
        default=None, init=False
    )
    """The state of a file that the periodic residency scan's diffs start from (its cached
    and dirty pages as ADDED and DIRTY), when that scan is what reports changes."""
    _resolver: Callable[[int, int], tuple[str, int] | None] | None = attrs.field(
        default=None, init=False
    )

    @property
    def checker(self) -> Checker | None:
        """The residency scanner that hints go to, if one runs."""
        return self._checker

    def attach(self, checker: Checker) -> None:
        """Make ``checker`` the receiver of hints (the residency source does this)."""
        self._checker = checker

    def lost(self, root: str | None) -> None:
        """Observations under ``root`` (every scope for None) were lost.

        Tasks whose scope overlaps it get OVERFLOW, and the scanner rescans it.
        """
        self.overflow(root)
        if self._checker is not None:
            self._checker.rescan(root)

    def cut(self, dev: int, ino: int, end: int) -> None:
        """The file ``(dev, ino)`` was cut short to ``end`` pages (see :meth:`Checker.cut`)."""
        if self._checker is not None:
            self._checker.cut(dev, ino, end)

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
            if not known:
                for listener in self.inode_listeners:
                    listener(dev, ino)
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
        if path is None:
            for listener in self.inode_listeners:
                listener(dev, ino)

    def scanned_dirty(self, observations: Sequence[Observation]) -> None:
        """A scan reported these observations (to some task): pass on the dirty pages."""
        for listener in self.dirty_listeners:
            listener(observations)

    def settle(self) -> None:
        """Take in every event the kernel has queued for the event sources so far.

        A registration scan calls it between its look at files and covering them: an event
        that happened before the look is then handled while its file is not covered yet
        (the look reported it), never after (which would report it twice).
        """
        for settle in self.settlers:
            settle()

    def ingest(
        self, observations: Sequence[Observation], *, mirror: bool = True, but: int | None = None
    ) -> None:
        """Hand observations to every task they are relevant to (but the slot ``but``).

        With a mirror attached (the residency source when another source is the exact one),
        the mirror learns them too, unless ``mirror`` is False (its own observations).
        """
        self.store.ingest(observations, but=but)
        if mirror and self._mirror is not None:
            self._mirror(observations)

    def resolve(self, dev: int, ino: int) -> tuple[str, int] | None:
        """A path and the generation of an inode no source has a path for (file handles)."""
        return None if self._resolver is None else self._resolver(dev, ino)

    def attach_resolver(self, resolver: Callable[[int, int], tuple[str, int] | None]) -> None:
        """Answer :meth:`resolve` with ``resolver`` (the framework, as root)."""
        self._resolver = resolver

    def attach_mirror(self, mirror: Callable[[Sequence[Observation]], None]) -> None:
        """Have ``mirror`` learn every observation that other sources hand over."""
        self._mirror = mirror


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
