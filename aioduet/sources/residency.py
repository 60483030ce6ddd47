"""The ``residency`` source: budgeted scans of the watched trees with cachestat and mincore.

Kernel interfaces: ``cachestat`` (Linux >= 6.5) gives a file's (or a range's) cached, dirty,
writeback and evicted page counts in one syscall; ``mincore`` over a read-only mapping gives
the per-page map; dirty pages are located exactly by bisecting with ranged cachestat calls.

How it works, after DAMON (bounded cost whatever the size of what is watched):

- **A budget.** The periodic scan may spend at most ``budget`` units per ``interval``, a unit
  being one kernel call (checking a file that is not cached is open, cachestat and close: 3
  units; one that is cached adds fstat, and an ioctl when its counts moved; mapping costs 3
  units plus one per 32 pages mapped; listing a directory 2). Whatever is left over when
  the budget is spent waits for the next interval, so the cost is set by the budget, not by
  the tree.
- **Hot files first.** Files known to hold cached or dirty pages (the only ones whose pages
  can be evicted or written back) are revisited in a ring that gets three quarters of the
  budget; the rest goes to a resumable walk of the whole tree, which finds files that became
  cached without any hint, new files and vanished ones.
- **Hints ahead of the budget.** The inotify and writeback sources name files that changed
  (read, written, created, moved, written back); those are checked within ``hint_delay``
  seconds, outside the periodic budget (their number follows the activity, not the tree).
- **Counts, then maps.** A file whose size, mtime and cachestat counts are unchanged is not
  mapped again (except on every ``verify_every``-th check of it). A large file is watched as
  adaptive regions (:mod:`._regions`): only the regions whose counts moved are mapped.

Diffs of a file's new map against its last one become observations: ADDED and REMOVED runs
(evictions included), DIRTY for newly dirty pages, FLUSHED for pages that were dirty and are
not any more. A file gone from its scope (deleted or moved out) is reported REMOVED for the
pages it had: at once when a hint says so, otherwise at the end of the walk that missed it.

Bounds (``B`` = budget, ``T`` = interval, ``H`` hot files, ``F`` files and ``D`` directories
in all scopes): an eviction is found within ``(ceil(5 H / (0.75 B)) + 1) T`` (plus the
region calls of large hot files), and any change that no hint reported within
``(ceil((3 F + 5 H + 2 D) / (0.25 B)) + 1) T``; ``status()`` shows the last full walk's
duration. With the defaults (``B`` = 800, ``T`` = 1 s) and nothing cached (the walk then gets
the whole budget), a walk of 100k files in 1000 directories takes about 380 s, while an
eviction among 100 hot files is found within 2 s.
A change that keeps every count equal is found by the ``verify_every``-th check of the file.
What it cannot see: changes that undo themselves between two checks, and files it may not
open or that cachestat refuses (counted as *unknown*, never reported as cached).
"""

from __future__ import annotations

import errno
import math
import os
import random
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import anyio
import anyio.abc
import attrs

from .. import _kernel
from .._model import Event
from .._paths import Exclusions, PathHint
from .._status import SourceStatus
from ..errors import ResidencyUnknown
from ..store import Observation
from . import _pagemap, _regions
from ._base import Introduction, PathNote, Sink
from ._counters import SourceCounters
from ._scopes import Scopes
from ._walk import Walk

__all__ = ["DEFAULT_BUDGET", "MIN_BUDGET", "ResidencySource"]

DEFAULT_BUDGET = 800
"""Kernel calls per interval for the periodic scan: about 270 checks of uncached files, under
1% of one core here (a call costs 9-11 us of CPU, Python included)."""
MIN_BUDGET = 4
"""The smallest budget: one file check per interval."""
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_ADDED, _REMOVED, _DIRTY, _FLUSHED = (int(e) for e in Event if e <= Event.FLUSHED)
_CHECK_COST = 4  # open, fstat, cachestat, close
_MAP_COST = 3  # mmap, mincore, munmap
_PAGES_PER_UNIT = 32
_HOT_SHARE = 0.75
_PAGE = _kernel.PAGE_SIZE


def _mark(vector: bytes | bytearray, first: int, count: int, value: bool) -> bytearray:
    """``vector`` as a bytearray with pages ``[first, first + count)`` set or cleared."""
    out = vector if isinstance(vector, bytearray) else bytearray(vector)
    end = first + count
    if len(out) < end:
        if not value:
            end = len(out)
        else:
            out.extend(bytes(end - len(out)))
    if first < end:
        out[first:end] = (b"\x01" if value else b"\x00") * (end - first)
    return out


def _cached_map(fd: int, size: int, first: int, count: int, batch: _Batch) -> bytes:
    """The cached pages of ``size`` bytes from page ``first``, as cachestat counts them.

    mincore says a page is cached only if its folio is up to date; cachestat (and the
    page-cache tracepoints) count every folio in the cache, such as a large folio that a
    partial write left not up to date. When the map mincore gives has fewer pages than
    ``count`` (the range's cachestat count), the pages are found by cachestat instead, so
    that the map agrees with the other sources and with cachestat (bench/flood.py found
    files that stayed one page apart forever).
    """
    window = _kernel.mincore(fd, size, first * _PAGE)
    batch.cost += _map_cost(len(window))
    if window.count(1) >= count:
        return window
    runs = _kernel.page_runs(fd, len(window) * _PAGE, "cache", first_page=first)
    batch.cost += _runs_cost(runs, len(window))
    return _pagemap.from_runs([(f - first, n) for f, n in runs], len(window))


def _map_cost(pages: int) -> int:
    return _MAP_COST + pages // _PAGES_PER_UNIT


def _runs_cost(runs: list[tuple[int, int]], pages: int) -> int:
    """About how many cachestat calls the bisection of page_runs made."""
    return 1 + 2 * len(runs) * max(1, pages.bit_length())


@attrs.define(eq=False, slots=True)
class _Known:
    """The last map of a file that had cached or dirty pages."""

    gen: int
    path: str
    signature: tuple[int, ...]
    cached: bytes | bytearray
    dirty: bytes | bytearray
    seen: int
    """The walk during which the file was last found at its path."""
    checked: int
    """The interval (tick) of its last check."""
    visits: int = 1
    """Checks so far; every ``verify_every``-th maps the file in full."""
    regions: list[_regions.Region] | None = None


def _hint(fd: int, path: str, listed: tuple[int, int], batch: _Batch) -> None:
    """Note where and as what an uncached file was walked (for an exact source)."""
    try:
        ctime = os.fstat(fd).st_ctime_ns
        gen = _kernel.inode_generation(fd)
    except OSError:
        return
    batch.hints.append((listed[0], listed[1], (path, gen, ctime)))


@attrs.define(eq=False)
class _Batch:
    """What a worker thread found in one batch of files, for the loop to apply."""

    observations: list[Observation] = attrs.field(factory=list)
    intro: list[Observation] = attrs.field(factory=list)
    notes: list[PathNote] = attrs.field(factory=list)
    """Paths of files that have (or had) cached or dirty pages; only those are indexed."""
    walked: list[tuple[int, int]] = attrs.field(factory=list)
    """Every file checked, for registration scans."""
    hinting: bool = False
    """Whether to gather :attr:`hints` (the sink keeps path hints)."""
    hints: list[tuple[int, int, PathHint]] = attrs.field(factory=list)
    """``(dev, ino, hint)`` of walked files that are not cached, hence not in :attr:`notes`."""
    gone: list[tuple[int, int, int]] = attrs.field(factory=list)
    files: int = 0
    cost: int = 0
    """Kernel calls made (see the module's budget)."""
    finished: bool = False
    """The walk this batch continued is complete."""
    unknown: list[str] = attrs.field(factory=list)
    """Files whose residency could not be known (not openable, or refused by cachestat)."""
    checked_unknown: list[str] = attrs.field(factory=list)
    """Files that were unknown before and could be checked now."""
    errors: int = 0
    last_error: str | None = None
    lost: str | None = None
    """A file that could not be checked for want of file descriptors (EMFILE, ENFILE): what
    happened to it is unknown until it is looked at again."""

    def add_runs(
        self,
        out: list[Observation],
        key: tuple[int, int, int],
        vector: bytes | bytearray,
        event: int,
    ) -> None:
        out.extend((key, first, count, event) for first, count in _pagemap.runs(vector))


@attrs.define(eq=False)
class _Hints:
    """Requests from hint sources, waiting for the next hint batch."""

    paths: dict[str, None] = attrs.field(factory=dict)
    trees: list[str] = attrs.field(factory=list)
    gone: list[str] = attrs.field(factory=list)
    moves: list[tuple[str, str]] = attrs.field(factory=list)
    dirty: bool = False

    def __bool__(self) -> bool:
        return bool(self.paths or self.trees or self.gone or self.moves or self.dirty)


@attrs.define(eq=False)
class ResidencySource:
    """Finds page-cache changes by budgeted rescans of the watched trees, and on hints.

    Args:
        sink: where observations and paths go; the source attaches itself as its checker.
        interval: seconds between two rounds of the periodic scan.
        budget: kernel calls per interval the periodic scan may make (see the module doc).
        batch_files: files checked per worker-thread call.
        verify_every: every this many checks of a file, map it even if its counts did not
            change, so that changes that kept every count equal are found too.
        hint_delay: seconds to gather hints before checking the files they name.
        exclude: paths not to scan (see :class:`aioduet._paths.Exclusions`).
    """

    sink: Sink
    interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    periodic: bool = True
    """False beside an exact source: registration scans and rescans only, no periodic
    rounds and no hinted checks, and the maps mirror the exact source's observations."""
    budget: int = attrs.field(default=DEFAULT_BUDGET, validator=attrs.validators.ge(MIN_BUDGET))
    batch_files: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    verify_every: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    hint_delay: float = attrs.field(default=0.01, validator=attrs.validators.ge(0))
    exclude: Exclusions = attrs.field(factory=Exclusions)
    _roots: Scopes = attrs.field(init=False, factory=Scopes)
    _known: dict[tuple[int, int], _Known] = attrs.field(init=False, factory=dict)
    _by_path: dict[str, tuple[int, int]] = attrs.field(init=False, factory=dict)
    _dirty: set[tuple[int, int]] = attrs.field(init=False, factory=set)
    """Known files with dirty or writeback pages: what :meth:`check_dirty` rechecks."""
    _lock: anyio.Lock = attrs.field(init=False, factory=anyio.Lock)
    _wake: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _hinted: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _hints: _Hints = attrs.field(init=False, factory=_Hints)
    _rng: random.Random = attrs.field(init=False, factory=lambda: random.Random(0x0D1E7))
    # The periodic scan: a resumable walk and a ring of hot files.
    _walk: Walk | None = attrs.field(init=False, default=None)
    _walk_id: int = attrs.field(init=False, default=1)
    _walk_started: float = attrs.field(init=False, default=0.0)
    _walk_seconds: float | None = attrs.field(init=False, default=None)
    _verify_walk: bool = attrs.field(init=False, default=False)
    _verifying: bool = attrs.field(init=False, default=False)
    _hot: deque[tuple[int, int]] = attrs.field(init=False, factory=deque)
    _tick: int = attrs.field(init=False, default=0)
    _debt: int = attrs.field(init=False, default=0)
    _spent: int = attrs.field(init=False, default=0)
    # Counters.
    _counts: SourceCounters = attrs.field(init=False, factory=SourceCounters)
    _unknown: set[str] = attrs.field(init=False, factory=set)
    """Paths of files whose residency is unknown, as of the last walk or check."""
    _walk_unknown: set[str] = attrs.field(init=False, factory=set)
    _passes: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self.sink.attach(self)
        if not self.periodic:
            self.sink.attach_mirror(self.mirror)
        else:
            self.sink.known_state = self.known_state

    @property
    def name(self) -> str:
        return "residency"

    # -- scopes --------------------------------------------------------------------------

    def add_scope(self, root: str) -> None:
        self._roots.add(root)

    def remove_scope(self, root: str) -> None:
        self._roots.remove(root)

    def _in_scope(self, path: str) -> bool:
        return self._roots.cover(path) and not self.exclude(path)

    # -- hints (the Checker interface) ----------------------------------------------------

    def check_paths(self, paths: Iterable[str]) -> None:
        if self.periodic:  # passive: the exact source reports every change already
            self._hints.paths.update(dict.fromkeys(paths))
            self._hinted.set()

    def check_tree(self, path: str) -> None:
        if self.periodic:
            self._hints.trees.append(path)
            self._hinted.set()

    def path_gone(self, path: str) -> None:
        self._hints.gone.append(path)
        self._hinted.set()

    def path_moved(self, old: str, new: str) -> None:
        self._hints.moves.append((old, new))
        self._hinted.set()

    def check_dirty(self) -> None:
        if self.periodic:
            self._hints.dirty = True
            self._hinted.set()

    def cut(self, dev: int, ino: int, end: int) -> None:
        """The file was cut short to ``end`` pages: REMOVED (and FLUSHED) for the pages from
        there on that its map holds, which are what the tasks were told."""
        known = self._known.get((dev, ino))
        if known is None:
            return
        key = (dev, ino, known.gen)
        out: list[Observation] = [
            (key, end + first, count, _REMOVED)
            for first, count in _pagemap.runs(known.cached[end:])
        ]
        out += [
            (key, end + first, count, _FLUSHED) for first, count in _pagemap.runs(known.dirty[end:])
        ]
        if out:
            known.cached, known.dirty = known.cached[:end], known.dirty[:end]
            known.signature, known.regions = (), None
            self.sink.ingest(out, mirror=False)

    def rescan(self, root: str | None) -> None:
        """Start a walk at once that maps every file in full (the budget still applies)."""
        self._verify_walk = self._verifying = True
        self._walk = None
        self._wake.set()

    # -- running -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._counts.active = True
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._hint_loop)
                task_status.started()
                await self._sweep_loop()
        finally:
            self._counts.active = False

    async def _sweep_loop(self) -> None:
        while True:
            if not self.periodic:
                # Passive: rounds only while a rescan asked for after lost observations runs.
                while not self._verify_walk and self._walk is None:
                    await self._wake.wait()
                    self._wake = anyio.Event()
            started = time.monotonic()
            await self.scan_round()
            with anyio.move_on_after(self.interval - (time.monotonic() - started)):
                await self._wake.wait()
            self._wake = anyio.Event()

    def known_state(self, dev: int, ino: int) -> list[Observation]:
        """The file's pages as this source last mapped them (ADDED, DIRTY): what its next
        diff starts from. Nothing for a file it holds no map of."""
        known = self._known.get((dev, ino))
        if known is None:
            return []
        key = (dev, ino, known.gen)
        out: list[Observation] = [
            (key, first, count, _ADDED) for first, count in _pagemap.runs(known.cached)
        ]
        out += [(key, first, count, _DIRTY) for first, count in _pagemap.runs(known.dirty)]
        return out

    def mirror(self, observations: Sequence[Observation]) -> None:
        """Learn what the exact source reported, so that a rescan diffs against it.

        In passive mode the maps of known files follow the exact source's observations
        instead of this source's own checks; files are taken in when their path is known and
        lies in a scope. A changed map also clears the file's signature, so that its next
        check (a rescan's) maps it in full.
        """
        for key, first, count, event in observations:
            ident = (key[0], key[1])
            known = self._known.get(ident)
            if known is None or known.gen != key[2]:
                if not event & (_ADDED | _DIRTY):
                    continue
                path = next((p for p in self.sink.index.paths(*ident) if self._in_scope(p)), None)
                if path is None:
                    continue
                known = _Known(key[2], path, (), bytearray(), bytearray(), self._walk_id, 0)
                self._known[ident] = known
                self._by_path[path] = ident
            if event & (_ADDED | _REMOVED):
                known.cached = _mark(known.cached, first, count, bool(event & _ADDED))
            if event & (_DIRTY | _FLUSHED):
                known.dirty = _mark(known.dirty, first, count, bool(event & _DIRTY))
                if event & _DIRTY:
                    self._dirty.add(ident)
            known.signature = ()
            known.regions = None

    async def _hint_loop(self) -> None:
        while True:
            await self._hinted.wait()
            if self.hint_delay:
                await anyio.sleep(self.hint_delay)
            self._hinted = anyio.Event()
            hints, self._hints = self._hints, _Hints()
            await self._apply_hints(hints)

    async def scan_round(self) -> int:
        """One round of the periodic scan within the budget; returns the kernel calls made.

        A round that overran the budget (a file's check cannot be cut short) makes the next
        ones shorter by as much, so that over any run of rounds the calls made stay within
        the budget times the rounds, plus the cost of one file.
        """
        self._tick += 1
        allowance = self.budget - self._debt
        spent = await self._sweep(allowance) if allowance > 0 else 0
        self._debt = max(0, self._debt + spent - self.budget)
        self._spent = spent
        return spent

    async def scan_all(self) -> None:
        """One complete walk of every scope now, whatever the budget (for tests and tools)."""
        self._tick += 1
        self._walk = None
        await self._sweep(None)

    async def introduce(self, root: str, intro: Introduction) -> None:
        walk = Walk([root], self.exclude)
        while not (
            await self._run_batch(partial(self._check_walk, walk, None, True), intro)
        ).finished:
            pass

    async def _run_batch(
        self, work: Callable[[_Batch], None], intro: Introduction | None = None
    ) -> _Batch:
        """Run ``work`` on a fresh batch in a worker thread, then apply the batch."""
        async with self._lock:
            # Shielded: a batch checked in the thread has updated the known maps, so its
            # observations must reach the store even if the scan is being cancelled.
            with anyio.CancelScope(shield=True):
                batch = _Batch(hinting=self.sink.path_hints is not None)
                if intro is not None:
                    intro.looking()
                await anyio.to_thread.run_sync(work, batch)
                if intro is not None:
                    self.sink.settle()  # events from before the look: while not covered
                self._apply(batch, intro)
        return batch

    async def _sweep(self, budget: int | None) -> int:
        """One round of the periodic scan: hot files, then the walk; returns the units spent."""
        spent = 0
        if budget is not None:
            if not self._hot:
                self._hot.extend(self._known)
            hot_budget = int(budget * _HOT_SHARE)
            while self._hot and spent < hot_budget:
                batch = await self._run_batch(partial(self._check_hot, hot_budget - spent))
                spent += batch.cost
        while budget is None or spent < budget:
            if self._walk is None:
                self._start_walk()
            assert self._walk is not None
            left = None if budget is None else budget - spent
            batch = await self._run_batch(partial(self._check_walk, self._walk, left, False))
            spent += batch.cost
            if batch.finished:
                await self._finish_walk()
                break
        return spent

    def _start_walk(self) -> None:
        self._walk_id += 1
        self._walk = Walk(self._roots.outer(), self.exclude)
        self._walk_started = time.monotonic()
        self._verifying = self._verify_walk
        self._verify_walk = False
        self._walk_unknown = set()

    async def _finish_walk(self) -> None:
        async with self._lock:
            batch = _Batch()
            for ident in [i for i, k in self._known.items() if k.seen < self._walk_id]:
                self._forget(ident, batch)
            self._apply(batch, None)
            # Unknown files that were not met again are gone (or out of every scope).
            self._unknown = self._walk_unknown
        self._walk = None
        self._verifying = False
        self._passes += 1
        self._walk_seconds = time.monotonic() - self._walk_started

    async def _apply_hints(self, hints: _Hints) -> None:
        async with self._lock:
            batch = _Batch()
            for old, new in hints.moves:
                self._move(old, new, batch)
                hints.paths[new] = None
            self._drop_gone(set(hints.gone), batch)
            if hints.dirty:
                for ident in self._dirty:
                    hints.paths[self._known[ident].path] = None
            self._apply(batch, None)
        paths = [p for p in hints.paths if self._in_scope(p)]
        for start in range(0, len(paths), self.batch_files):
            chunk = paths[start : start + self.batch_files]
            await self._run_batch(partial(self._check_paths, chunk))
        for tree in hints.trees:
            if self._in_scope(tree):
                walk = Walk([tree], self.exclude)
                while not (
                    await self._run_batch(partial(self._check_walk, walk, None, False))
                ).finished:
                    pass

    # -- on the loop: applying batches and hints -------------------------------------------

    def _apply(self, batch: _Batch, intro: Introduction | None) -> None:
        sink = self.sink
        for dev, ino in sink.learn(batch.notes):
            sink.relocate(dev, ino, self._present(dev, ino))
        if batch.hints and sink.path_hints is not None:
            add_hint = sink.path_hints.add
            for dev, ino, hint in batch.hints:
                add_hint(dev, ino, hint)
        if intro is not None:
            intro.cover(batch.walked)
        if batch.observations:
            sink.ingest(batch.observations, mirror=False, but=None if intro is None else intro.slot)
        if batch.intro and intro is not None:
            intro.deliver(batch.intro)
        if sink.dirty_listeners:
            sink.scanned_dirty(batch.observations)
            sink.scanned_dirty(batch.intro)
        for dev, ino, gen in batch.gone:
            sink.unlearn(dev, ino)
            sink.store.retire((dev, ino, gen))
        self._counts.observations += len(batch.observations) + len(batch.intro)
        self._counts.errors += batch.errors
        self._unknown.update(batch.unknown)
        self._unknown.difference_update(batch.checked_unknown)
        self._walk_unknown.update(batch.unknown)
        if batch.last_error is not None:
            self._counts.last_error = batch.last_error
        if batch.lost is not None:
            # Not a file's fault but the process's: the tasks hear that they may miss
            # something (OVERFLOW), and a rescan looks again (in the exact set too).
            self._counts.lost += 1
            self._counts.overflows += 1
            sink.lost(batch.lost)

    def _forget(self, ident: tuple[int, int], batch: _Batch) -> None:
        """The file left every scope: its pages are gone for the tasks."""
        known = self._known.pop(ident)
        self._dirty.discard(ident)
        if self._by_path.get(known.path) == ident:
            del self._by_path[known.path]
        key = (ident[0], ident[1], known.gen)
        batch.add_runs(batch.observations, key, known.cached, _REMOVED)
        batch.gone.append(key)

    def _affected(self, paths: set[str]) -> list[tuple[int, int]]:
        """Known files at one of ``paths`` or below one of them."""
        found = [self._by_path[p] for p in paths if p in self._by_path]
        rest = paths.difference(self._by_path)
        if rest:
            for ident, known in self._known.items():
                parent = known.path
                while (parent := parent.rpartition("/")[0]) and parent not in rest:
                    pass
                if parent:
                    found.append(ident)
        return found

    def _drop_gone(self, paths: set[str], batch: _Batch) -> None:
        for ident in self._affected(paths):
            if ident in self._known:
                self._forget(ident, batch)

    def _move(self, old: str, new: str, batch: _Batch) -> None:
        # A file renamed over another replaces it: the one at ``new`` is gone.
        self._drop_gone({new}, batch)
        for ident in self._affected({old}):
            known = self._known.get(ident)
            if known is None:
                continue
            before = known.path
            path = new + before[len(old) :]
            if not self._in_scope(path):
                self._forget(ident, batch)
                continue
            if self._by_path.get(before) == ident:
                del self._by_path[before]
            known.path = path
            self._by_path[path] = ident
            self.sink.index.discard(ident[0], ident[1], before)
            self.sink.index.add(ident[0], ident[1], path)
            self.sink.relocate(ident[0], ident[1], self._present(*ident))

    def _present(self, dev: int, ino: int) -> list[tuple[int, int, int]]:
        known = self._known.get((dev, ino))
        if known is None:
            return []
        cached = [(first, count, _ADDED) for first, count in _pagemap.runs(known.cached)]
        return cached + [(first, count, _DIRTY) for first, count in _pagemap.runs(known.dirty)]

    # -- worker-thread side ---------------------------------------------------------------

    def _check_walk(self, walk: Walk, limit: int | None, intro: bool, batch: _Batch) -> None:
        """Check files of ``walk`` until ``batch_files`` or ``limit`` units; mark the end."""
        # Files checked this round already are only marked seen, unless every file is to be
        # mapped again (a rescan).
        tick = -1 if self._verifying else self._tick
        known_files = self._known
        before = walk.cost
        files = iter(walk)
        for path, ino, dev in files:
            listed = (dev, ino)
            known = known_files.get(listed)
            if not intro and known is not None and known.checked == tick and known.path == path:
                known.seen = self._walk_id  # checked this round already: only seen
                continue
            self._try(path, intro, batch, listed)
            if batch.files >= self.batch_files or (
                limit is not None and batch.cost + walk.cost - before >= limit
            ):
                break
        else:
            batch.finished = True
        batch.cost += walk.cost - before
        if walk.denied:  # directories it may not list: counted, never fatal
            batch.errors += len(walk.denied)
            batch.last_error = f"{walk.denied[-1]}: cannot list the directory (permission denied)"
            walk.denied.clear()

    def _check_hot(self, limit: int, batch: _Batch) -> None:
        tick, hot = self._tick, self._hot
        while hot and batch.files < self.batch_files and batch.cost < limit:
            known = self._known.get(hot.popleft())
            if known is None or known.checked == tick:
                continue
            if self._in_scope(known.path):
                self._try(known.path, False, batch)

    def _check_paths(self, paths: list[str], batch: _Batch) -> None:
        for path in paths:
            self._try(path, False, batch)

    def _try(
        self, path: str, intro: bool, batch: _Batch, listed: tuple[int, int] | None = None
    ) -> None:
        batch.files += 1
        try:
            self._check(path, intro, batch, listed)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except ResidencyUnknown:
            batch.unknown.append(path)
        except OSError as exc:
            batch.errors += 1
            batch.last_error = f"{path}: {exc.strerror or exc}"
            if exc.errno in (errno.EMFILE, errno.ENFILE) and batch.lost is None:
                batch.lost = path

    def _check(
        self, path: str, intro: bool, batch: _Batch, listed: tuple[int, int] | None = None
    ) -> None:
        """Check one file; ``listed`` is its ``(dev, ino)`` when a directory listing gave it."""
        batch.cost += 1
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except PermissionError:
            batch.unknown.append(path)
            return
        try:
            found = self._stat_and_counts(fd, path, batch, listed)
            if found is None:
                return
            st, counts = found
            ident = (st.st_dev, st.st_ino)
            batch.walked.append(ident)
            known = self._known.get(ident)
            if known is None and not counts.cache and not counts.dirty:
                return
            batch.notes.append((st.st_dev, st.st_ino, st.st_nlink, path))
            signature = (
                st.st_size,
                st.st_mtime_ns,
                counts.cache,
                counts.dirty,
                counts.writeback,
                counts.evicted,
                counts.recently_evicted,
            )
            verify = self._verifying
            if known is not None:
                known.seen, known.checked = self._walk_id, self._tick
                known.visits += 1
                verify = verify or known.visits % self.verify_every == 0
                if known.path != path:
                    if self._by_path.get(known.path) == ident:
                        del self._by_path[known.path]
                    known.path = path
                    self._by_path[path] = ident
                if known.signature == signature and not verify:
                    if intro:
                        key = (st.st_dev, st.st_ino, known.gen)
                        batch.add_runs(batch.intro, key, known.cached, _ADDED)
                        batch.add_runs(batch.intro, key, known.dirty, _DIRTY)
                    return
            gen, cached, dirty, regions = self._map(
                fd, st.st_size, counts, known, verify=verify, batch=batch
            )
        finally:
            os.close(fd)
        visits = known.visits if known is not None else 1
        fresh = _Known(gen, path, signature, cached, dirty, self._walk_id, self._tick, visits)
        fresh.regions = regions
        self._record(batch, ident, fresh, intro)

    def _stat_and_counts(
        self, fd: int, path: str, batch: _Batch, listed: tuple[int, int] | None
    ) -> tuple[os.stat_result, _kernel.CacheStat] | None:
        """A regular file's stat and counts; None when nothing more is to be done."""
        if listed is not None and listed not in self._known:
            # The common case of a walk: a file not known to be cached. If it still is not,
            # open, cachestat and close were all it took.
            counts = _kernel.cachestat(fd)
            batch.cost += 2
            if path in self._unknown:  # read under the lock, like every worker-side access
                batch.checked_unknown.append(path)
            if not counts.cache and not counts.dirty:
                batch.walked.append(listed)
                if batch.hinting:
                    _hint(fd, path, listed, batch)
                return None
            batch.cost += 1
            return os.fstat(fd), counts
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            batch.cost += 2
            return None
        counts = _kernel.cachestat(fd)
        batch.cost += _CHECK_COST - 1
        if path in self._unknown:
            batch.checked_unknown.append(path)
        return st, counts

    def _map(
        self,
        fd: int,
        size: int,
        counts: _kernel.CacheStat,
        known: _Known | None,
        *,
        verify: bool,
        batch: _Batch,
    ) -> tuple[int, bytes, bytes, list[_regions.Region] | None]:
        """A file's generation, cached and dirty maps, and regions: in full, or by region."""
        batch.cost += 1
        gen = _kernel.inode_generation(fd)
        pages = math.ceil(size / _PAGE)
        if (
            known is not None
            and not verify
            and known.regions is not None
            and known.gen == gen
            and len(known.cached) == len(known.dirty) == pages
        ):
            cached, dirty = self._refresh_regions(fd, known.regions, known, batch)
            return gen, cached, dirty, _regions.adapt(known.regions, cached, dirty, self._rng)
        cached = bytes(pages)
        if counts.cache:
            cached = _cached_map(fd, size, 0, counts.cache, batch)
        dirty = bytes(pages)
        if counts.dirty:
            runs = _kernel.dirty_runs(fd, size, counts.dirty)
            batch.cost += _runs_cost(runs, pages)
            dirty = _pagemap.from_runs(runs, pages)
            # A dirty page is in the cache, even in a folio mincore does not count.
            cached = _pagemap.or_(cached, dirty)
        return gen, cached, dirty, _regions.initial(cached, dirty)

    def _refresh_regions(
        self, fd: int, regions: list[_regions.Region], known: _Known, batch: _Batch
    ) -> tuple[bytes, bytes]:
        """New maps of a large file, mapping only the regions whose counts moved."""
        cached, dirty = bytearray(known.cached), bytearray(known.dirty)
        for region in regions:
            counts = _kernel.cachestat(fd, region.first * _PAGE, region.count * _PAGE)
            batch.cost += 1
            moved = False
            if counts.cache != region.cache:
                window = _cached_map(fd, region.count * _PAGE, region.first, counts.cache, batch)
                cached[region.first : region.first + len(window)] = window
                moved = True
            if counts.dirty != region.dirty:
                runs = _kernel.page_runs(
                    fd, region.count * _PAGE, "dirty", counts.dirty, first_page=region.first
                )
                batch.cost += _runs_cost(runs, region.count)
                local = [(first - region.first, count) for first, count in runs]
                dirty[region.first : region.end] = _pagemap.from_runs(local, region.count)
                for first, count in runs:  # dirty pages are cached (see _map)
                    end = min(first + count, len(cached))
                    cached[first:end] = b"\x01" * (end - first)
                moved = True
            if moved:
                region.cache, region.dirty, region.stable = counts.cache, counts.dirty, 0
            else:
                region.stable += 1
        return bytes(cached), bytes(dirty)

    def _record(self, batch: _Batch, ident: tuple[int, int], fresh: _Known, intro: bool) -> None:
        """Diff a file's fresh map against the last one, and keep the fresh one."""
        gen, cached, dirty = fresh.gen, fresh.cached, fresh.dirty
        known = self._known.get(ident)
        old_cached: bytes | bytearray = b""
        old_dirty: bytes | bytearray = b""
        if known is not None:
            if known.gen == gen:
                old_cached, old_dirty = known.cached, known.dirty
            else:  # the inode number was reused: the old file's pages are gone
                old_key = (ident[0], ident[1], known.gen)
                batch.add_runs(batch.observations, old_key, known.cached, _REMOVED)
        key = (ident[0], ident[1], gen)
        added, removed = _pagemap.diff(old_cached, cached)
        dirtied, cleaned = _pagemap.diff(old_dirty, dirty)
        out = batch.observations
        out.extend((key, first, count, _ADDED) for first, count in added)
        out.extend((key, first, count, _REMOVED) for first, count in removed)
        out.extend((key, first, count, _DIRTY) for first, count in dirtied)
        # Pages no longer dirty were written back, whether or not they are still cached (a
        # page written back and evicted within one interval is REMOVED and FLUSHED).
        out.extend((key, first, count, _FLUSHED) for first, count in cleaned)
        if intro:  # the new task hears the current state (the diffs go to the others)
            batch.add_runs(batch.intro, key, cached, _ADDED)
            batch.add_runs(batch.intro, key, dirty, _DIRTY)
        has_dirty = bool(dirty.count(1))
        if has_dirty or cached.count(1):
            self._known[ident] = fresh
            self._by_path[fresh.path] = ident
            if has_dirty or fresh.signature[4]:  # dirty or under writeback
                self._dirty.add(ident)
            else:
                self._dirty.discard(ident)
        elif known is not None:
            del self._known[ident]
            self._dirty.discard(ident)
            if self._by_path.get(known.path) == ident:
                del self._by_path[known.path]

    # -- status --------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        return self._counts.status(
            self.name,
            unknown=len(self._unknown),
            passes=self._passes,
            budget=self.budget,
            budget_used=self._spent / self.budget,
            cycle_seconds=self._walk_seconds,
        )
