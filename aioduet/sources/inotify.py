"""The ``inotify`` source: file-level hints that trigger targeted residency checks.

Kernel interface: inotify (any Linux; ``inotify_init1`` since 2.6.27), one watch per
directory of the watched trees, read on the event loop. It reports which files were read,
written, created, deleted and renamed, never which pages: each hint goes to the residency
scanner (the sink's :class:`~aioduet.sources.Checker`), which checks those files at once, and
renames and deletions keep its paths current.

What it cannot see: memory-mapped reads and writes, page-cache evictions, directories below
a mount point (not entered, like ``find -xdev``) and
directories it may not read (counted as errors). The kernel queue holds
``/proc/sys/fs/inotify/max_queued_events`` events; when it overflows, every scope gets
OVERFLOW and a rescan. One watch per directory counts against
``/proc/sys/fs/inotify/max_user_watches``.

Design, for speed (it keeps up with a few hundred thousand events per second): records are
split while parsed (:func:`~._inotify_wire.split_events`) into plain file hints, coalesced
in a set of ``(wd, raw name)`` and turned into paths once per batch, and the rest, handled in
order. Watches are set up in worker threads by a single manager task; events for watch
descriptors not yet known are held until the set-up in progress is applied, and directory
renames seen meanwhile are replayed onto its results.
"""

from __future__ import annotations

import errno
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Iterable

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .._paths import Exclusions, is_under
from .._status import SourceStatus
from ..errors import SourceUnavailable
from . import _inotify_wire as wire
from ._base import Introduction, Sink
from ._counters import SourceCounters
from ._scopes import Scopes

__all__ = ["InotifySource"]

_HELD_LIMIT = 1 << 16
"""Events held for unknown watches beyond this count are dropped and treated as an overflow."""


def _patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    if isinstance(patterns, str):
        raise TypeError("exclude must be a list of patterns, not a single str")
    return tuple(patterns)


@attrs.define(eq=False)
class InotifySource:
    """Watches the scopes' directory trees with inotify and turns events into residency hints.

    Args:
        sink: where hints go (its ``checker``; without one, hints are dropped but watches and
            paths are still kept current) and where lost observations are reported.
        exclude: fnmatch patterns matched against each absolute path and each base name;
            matching directories are not watched and events for matching files are dropped.
        hints: watch reads, writes and attribute changes too (the default); False watches
            only creations, deletions and moves, for use beside an exact source.
        read_size: bytes per ``read(2)`` of the inotify fd.
        reads_per_wakeup: reads at most per wake-up, so that other tasks get the loop.
        move_grace: seconds an ``IN_MOVED_FROM`` whose ``IN_MOVED_TO`` has not been read yet
            waits for it before the file counts as moved out.
        coalesce: after a wake-up that read at least ``busy_batch`` events, seconds to let
            events gather before the next read. Under load this turns many small wake-ups
            into few large ones (each costs tens of microseconds of event-loop work), at the
            price of that much latency; the kernel queue gives far more slack (16384 events
            are 50 ms at 300k events/s).
        busy_batch: events per wake-up from which the reader counts as busy.
    """

    sink: Sink
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_patterns)
    hints: bool = True
    """False beside an exact source: watch only what changes paths (no read/write events)."""
    read_size: int = attrs.field(default=1 << 17, validator=attrs.validators.ge(4096))
    reads_per_wakeup: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    move_grace: float = attrs.field(default=0.01, validator=attrs.validators.ge(0))
    coalesce: float = attrs.field(default=0.002, validator=attrs.validators.ge(0))
    busy_batch: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    _exclusions: Exclusions = attrs.field(init=False)
    _roots: Scopes = attrs.field(init=False, factory=Scopes)
    _ready: dict[str, anyio.Event] = attrs.field(init=False, factory=dict)
    _table: wire.WatchTable = attrs.field(init=False, factory=wire.WatchTable)
    _fd: int = attrs.field(init=False, default=-1)
    _stop: threading.Event = attrs.field(init=False, factory=threading.Event)
    _ops: list[Callable[[], Awaitable[None]]] = attrs.field(init=False, factory=list)
    _wake: anyio.Event | None = attrs.field(init=False, default=None)
    _running_job: bool = attrs.field(init=False, default=False)
    _moves: list[tuple[str, str]] = attrs.field(init=False, factory=list)
    """Directory renames handled while a set-up was under way, to replay onto its results."""
    _held: list[wire.RawEvent] = attrs.field(init=False, factory=list)
    _held_hints: set[tuple[int, bytes]] = attrs.field(init=False, factory=set)
    _moved_from: dict[int, tuple[str, int, int]] = attrs.field(init=False, factory=dict)
    """cookie -> (path, IN_ISDIR bit, wake-up number) of moves whose other half is unread."""
    _wakeups: int = attrs.field(init=False, default=0)
    _rewalk_queued: bool = attrs.field(init=False, default=False)
    _counts: SourceCounters = attrs.field(init=False, factory=SourceCounters)
    _denied: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._exclusions = Exclusions(self.exclude)

    @property
    def name(self) -> str:
        return "inotify"

    @property
    def watches(self) -> int:
        """Directories watched now."""
        return len(self._table)

    @property
    def denied(self) -> int:
        """Directories that could not be watched or listed (``EACCES``) so far."""
        return self._denied

    # -- scopes --------------------------------------------------------------------------

    def add_scope(self, root: str) -> None:
        if self._roots.add(root):
            self._ready[root] = anyio.Event()
            if self._fd >= 0:
                self._schedule(functools.partial(self._job_add, root))

    def remove_scope(self, root: str) -> None:
        if not self._roots.remove(root):
            return
        ready = self._ready.pop(root, None)
        if ready is not None:
            ready.set()  # nobody may wait for a scope that is gone
        if self._fd >= 0:
            self._schedule(functools.partial(self._job_remove, root))

    async def introduce(self, root: str, intro: Introduction) -> None:
        """Return once ``root`` is watched; hints come later, as events, never from here.

        Waits for :meth:`run` to have started if it has not yet.
        """
        ready = self._ready.get(root)
        if ready is not None:
            await ready.wait()

    # -- running -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            fd = wire.inotify_init1()
        except OSError as exc:
            # EMFILE is either limit: this user's inotify instances, or this process's fds.
            hint = (
                " (RLIMIT_NOFILE reached, or see /proc/sys/fs/inotify/max_user_instances)"
                if exc.errno == errno.EMFILE
                else ""
            )
            raise SourceUnavailable(
                exc.errno or errno.EIO, f"inotify unavailable: {exc.strerror}{hint}"
            ) from exc
        self._fd = fd
        self._stop = threading.Event()
        self._table = wire.WatchTable()
        self._ops.clear()
        for root in self._roots:
            if self._ready[root].is_set():  # from an earlier run
                self._ready[root] = anyio.Event()
            self._schedule(functools.partial(self._job_add, root))
        self._counts.active = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._manage)
                task_status.started()
                try:
                    await self._read(fd)
                finally:
                    self._stop.set()  # ends a walk under way in a worker thread promptly
                    tg.cancel_scope.cancel()
        finally:
            self._counts.active = False
            self._fd = -1
            self._table = wire.WatchTable()
            self._moved_from.clear()
            self._held.clear()
            self._held_hints.clear()
            anyio.notify_closing(fd)
            os.close(fd)

    async def _read(self, fd: int) -> None:
        read = os.read
        size = self.read_size
        # A read shorter than this found the queue empty: no need for one more to see EAGAIN.
        short = size - 2 * (wire.HEADER_SIZE + 256)
        while True:
            if self._moved_from:
                with anyio.move_on_after(self.move_grace) as scope:
                    await anyio.wait_readable(fd)
                if scope.cancelled_caught:
                    self._expire_moves(everything=True)
                    continue
            else:
                await anyio.wait_readable(fd)
            self._wakeups += 1
            hints: set[tuple[int, bytes]] = set()
            others: list[wire.RawEvent] = []
            count = 0
            for _ in range(self.reads_per_wakeup):
                try:
                    buf = read(fd, size)
                except BlockingIOError:
                    break
                try:
                    count += wire.split_events(buf, hints, others)
                except wire.InotifyWireError as exc:
                    self._counts.error(str(exc))
                    self._overflow()
                if len(buf) < short:
                    break
            self._counts.observations += count
            self._handle(others, hints)
            self._expire_moves(everything=False)
            if count >= self.busy_batch and self.coalesce:
                await anyio.sleep(self.coalesce)

    # -- events --------------------------------------------------------------------------

    @property
    def _busy(self) -> bool:
        return self._running_job or bool(self._ops)

    def _handle(self, others: list[wire.RawEvent], hints: set[tuple[int, bytes]]) -> None:
        """One batch: structural events in order, then the coalesced hints."""
        check: dict[str, None] = {}
        busy = self._busy
        for event in others:
            self._event(event, check, busy)
        prefixes = self._table.prefixes
        excluding = bool(self._exclusions)
        decode = wire.decode_hint
        for wd, raw in hints:
            # Resolved after the structural events, so a file in a directory renamed in
            # this batch is checked at its new path.
            prefix = prefixes.get(wd)
            if prefix is None:
                if busy:
                    self._held_hints.add((wd, raw))
                continue
            path = prefix + decode(raw)
            if not excluding or not self._exclusions.remembered(path):
                check[path] = None
        if len(self._held) + len(self._held_hints) > _HELD_LIMIT:
            self._held.clear()
            self._held_hints.clear()
            self._overflow()
        checker = self.sink.checker
        if check and checker is not None:
            checker.check_paths(list(check))

    def _event(self, event: wire.RawEvent, check: dict[str, None], busy: bool) -> None:
        wd, mask, cookie, name = event
        if mask & wire.IN_Q_OVERFLOW:
            self._overflow()
            return
        prefix = self._table.prefixes.get(wd)
        if prefix is None:
            if busy:
                self._held.append(event)
            return
        if mask & wire.IN_IGNORED:
            self._table.unbind(wd)
            return
        if not name:
            if mask & wire.IN_MOVE_SELF:
                self._self_moved(wd)
            return  # other events on a watched directory itself tell nothing about files
        self._named_event(prefix + name, mask, cookie, check)

    def _named_event(self, path: str, mask: int, cookie: int, check: dict[str, None]) -> None:
        isdir = mask & wire.IN_ISDIR
        if mask & wire.IN_MOVED_FROM:
            self._moved_from[cookie] = (path, isdir, self._wakeups)
        elif mask & wire.IN_MOVED_TO:
            source = self._moved_from.pop(cookie, None)
            if source is None:
                self._arrived(path, isdir, check)
            else:
                self._moved(source[0], path, isdir, check)
        elif self._exclusions and self._exclusions.remembered(path):
            return
        elif mask & wire.IN_DELETE:
            checker = self.sink.checker
            if checker is not None:
                checker.path_gone(path)
        elif isdir:
            if mask & wire.IN_CREATE:
                self._arrived(path, isdir, check)
        elif mask & wire.HINT_MASK:
            check[path] = None

    def _arrived(self, path: str, isdir: int, check: dict[str, None]) -> None:
        """A file or directory was created or moved in from outside every watched tree."""
        if self._exclusions.remembered(path):
            return
        if isdir:
            self._schedule(functools.partial(self._job_tree, path))
        else:
            check[path] = None

    def _departed(self, path: str, isdir: int) -> None:
        """A file or directory was moved out of every watched tree."""
        if self._exclusions.remembered(path):
            return
        if isdir:
            self._unwatch(self._table.under(path))
        checker = self.sink.checker
        if checker is not None:
            checker.path_gone(path)

    def _moved(self, old: str, new: str, isdir: int, check: dict[str, None]) -> None:
        old_out, new_out = self._exclusions.remembered(old), self._exclusions.remembered(new)
        if old_out or new_out:
            if not new_out:
                self._arrived(new, isdir, check)
            elif not old_out:
                self._departed(old, isdir)
            return
        if isdir:
            self._table.rename(old, new)
            if self._busy:
                self._moves.append((old, new))
        checker = self.sink.checker
        if checker is not None:
            checker.path_moved(old, new)

    def _self_moved(self, wd: int) -> None:
        # A directory renamed inside the watched trees was handled by its parent's events;
        # a scope root whose parent is not watched has left its scope.
        path = self._table.path_of(wd)
        if path is not None and path in self._roots:
            parent = os.path.dirname(path)
            if parent == path or parent not in self._table.wds:
                self._departed(path, wire.IN_ISDIR)

    def _expire_moves(self, *, everything: bool) -> None:
        """Moves whose other half did not come in time went out of every watched tree."""
        if not self._moved_from:
            return
        now = self._wakeups
        for cookie, (path, isdir, seen) in list(self._moved_from.items()):
            if everything or seen < now:
                del self._moved_from[cookie]
                self._departed(path, isdir)

    def _overflow(self) -> None:
        self._counts.overflows += 1
        self._counts.lost += 1  # at least one; the kernel does not say how many
        self._moved_from.clear()
        for root in self._roots.outer():  # tasks hear of it at once; the rescan follows
            self.sink.overflow(root)
        if not self._rewalk_queued:
            self._rewalk_queued = True
            self._schedule(self._job_rewalk)

    # -- watch set-up and tear-down (the manager task) -------------------------------------

    def _schedule(self, job: Callable[[], Awaitable[None]]) -> None:
        self._ops.append(job)
        if self._wake is not None:
            self._wake.set()

    async def _manage(self) -> None:
        while True:
            self._wake = anyio.Event()
            while self._ops:
                job = self._ops.pop(0)
                self._running_job = True
                try:
                    await job()
                finally:
                    self._running_job = False
                self._after_job()
            await self._wake.wait()

    def _after_job(self) -> None:
        if not self._busy:
            self._moves.clear()
        if self._held or self._held_hints:
            held, hints = self._held, self._held_hints
            self._held, self._held_hints = [], set()
            self._handle(held, hints)

    async def _walk(self, root: str) -> str:
        """Watch the tree at ``root``; returns root's path now (it may have been renamed)."""
        since = len(self._moves)
        setup = await anyio.to_thread.run_sync(
            wire.watch_tree,
            self._fd,
            root,
            self._exclusions,
            self._stop,
            wire.WATCH_MASK if self.hints else wire.PATH_MASK,
        )
        moves = self._moves[since:]

        def current(path: str) -> str:
            for old, new in moves:
                if is_under(path, old):
                    path = new + path[len(old) :]
            return path

        table = self._table
        for wd, path in setup.watches:
            table.bind(wd, current(path) if moves else path)
        self._denied += len(setup.denied)
        self._counts.errors += setup.errors
        if setup.last_error is not None:
            self._counts.last_error = setup.last_error
        return current(root)

    async def _job_add(self, root: str) -> None:
        if root in self._roots:
            await self._walk(root)
        ready = self._ready.get(root)
        if ready is not None:
            ready.set()

    async def _job_tree(self, path: str) -> None:
        path = await self._walk(path)
        checker = self.sink.checker
        if checker is not None:
            checker.check_tree(path)

    async def _job_remove(self, root: str) -> None:
        if root in self._roots:
            return  # added again meanwhile
        remaining = list(self._roots)
        wds = [
            wd
            for wd in self._table.under(root)
            if not any(is_under(self._table.path_of(wd) or "", r) for r in remaining)
        ]
        await self._rm(wds)

    async def _job_rewalk(self) -> None:
        # After an overflow, directories created meanwhile may lack watches: watch every tree
        # again (existing watches are kept as they are), then have every scope rescanned
        # (once: a rescan restarts the residency walk).
        self._rewalk_queued = False
        for root in self._roots.outer():
            await self._walk(root)
        checker = self.sink.checker
        if checker is not None:
            checker.rescan(None)

    def _unwatch(self, wds: list[int]) -> None:
        if wds:
            self._schedule(functools.partial(self._rm, wds))

    async def _rm(self, wds: list[int]) -> None:
        for wd in wds:
            self._table.unbind(wd)
        fd, stop = self._fd, self._stop

        def remove() -> str | None:
            failed = None
            for wd in wds:
                if stop.is_set():
                    break
                try:
                    wire.rm_watch(fd, wd)
                except OSError as exc:
                    failed = f"inotify_rm_watch: {exc.strerror}"
            return failed

        failed = await anyio.to_thread.run_sync(remove)
        if failed is not None:
            self._counts.error(failed)

    # -- status --------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        return self._counts.status(self.name)
