"""The ``residency`` source: periodic scans of the watched trees with cachestat and mincore.

Kernel interfaces: ``cachestat`` (Linux >= 6.5) gives each file's cached, dirty, writeback
and evicted page counts in one syscall; ``mincore`` over a read-only mapping gives the
per-page map; dirty pages are located exactly by bisecting with ranged cachestat calls.

Each pass walks the scopes in worker threads, a batch of files at a time, staying on each
scope's filesystem. A file whose size, mtime and cachestat counts are unchanged since the
last pass is not mapped again (except on every ``verify_every``-th pass); otherwise
its map is diffed against the last one and the differences become observations: ADDED and
REMOVED runs (evictions included), DIRTY for newly dirty pages, FLUSHED for pages that were
dirty and are clean and still cached. A file that is gone from its scope at the end of a pass
(deleted or moved out) is reported REMOVED for the pages it had.

What it cannot see: changes that undo themselves between two passes (a page evicted and read
back), and anything in files it may not open or that cachestat refuses (counted as
*unknown*, never reported as cached). A change that keeps every count equal (one page
evicted and another read within one interval) is found by the next verifying pass. The
pass interval is fixed; its cost grows with the size of the trees.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Iterator

import anyio
import anyio.abc
import attrs

from .. import _kernel
from .._model import Event
from .._paths import is_under
from .._status import SourceStatus
from ..errors import ResidencyUnknown
from ..store import Observation
from . import _pagemap
from ._base import Introduction, PathNote, Sink

__all__ = ["ResidencySource"]

_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_ADDED, _REMOVED, _DIRTY, _FLUSHED = (int(e) for e in Event if e <= Event.FLUSHED)


@attrs.define(eq=False, slots=True)
class _Known:
    """The last map of a file that had cached or dirty pages."""

    gen: int
    signature: tuple[int, ...]
    cached: bytes
    dirty: bytes
    stamp: int
    """The pass during which the file was last checked."""


@attrs.define(eq=False)
class _Batch:
    """What a worker thread found in one batch of files, for the loop to apply."""

    observations: list[Observation] = attrs.field(factory=list)
    intro: list[Observation] = attrs.field(factory=list)
    notes: list[PathNote] = attrs.field(factory=list)
    """Paths of files that have (or had) cached or dirty pages; only those are indexed."""
    walked: list[tuple[int, int]] = attrs.field(factory=list)
    """Every file checked, for registration scans."""
    gone: list[tuple[int, int, int]] = attrs.field(factory=list)
    files: int = 0
    unknown: list[str] = attrs.field(factory=list)
    """Files whose residency could not be known (not openable, or refused by cachestat)."""
    checked_unknown: list[str] = attrs.field(factory=list)
    """Files that were unknown before and could be checked now."""
    errors: int = 0
    last_error: str | None = None

    def add_runs(
        self, out: list[Observation], key: tuple[int, int, int], vector: bytes, event: int
    ) -> None:
        out.extend((key, first, count, event) for first, count in _pagemap.runs(vector))


def _walk(root: str) -> Iterator[str]:
    """Regular files under ``root``, on root's filesystem only (like ``find -xdev``).

    Symlinks are not followed, entries that vanish are skipped, and directories on another
    filesystem (``/proc`` under ``/``, a disk mounted below the root) are not entered.
    """
    try:
        device = os.stat(root).st_dev
    except OSError:
        return
    stack = [root]
    while stack:
        try:
            scanner = os.scandir(stack.pop())
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        with scanner:
            for entry in scanner:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if entry.stat(follow_symlinks=False).st_dev == device:
                            stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        yield entry.path
                except OSError:
                    continue


@attrs.define(eq=False)
class ResidencySource:
    """Finds page-cache changes by rescanning the watched trees every ``interval`` seconds.

    Args:
        sink: where observations and paths go.
        interval: seconds between the starts of two passes.
        batch_files: files checked per worker-thread call.
        verify_every: every this many passes, map files whose counts did not change too,
            so that changes that kept every count equal are found within this many passes.
    """

    sink: Sink
    interval: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    batch_files: int = attrs.field(default=256, validator=attrs.validators.ge(1))
    verify_every: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """Every this many passes, files whose counts did not change are mapped all the same."""
    _roots: dict[str, int] = attrs.field(init=False, factory=dict)
    _known: dict[tuple[int, int], _Known] = attrs.field(init=False, factory=dict)
    _lock: anyio.Lock = attrs.field(init=False, factory=anyio.Lock)
    _wake: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _active: bool = attrs.field(init=False, default=False)
    _observations: int = attrs.field(init=False, default=0)
    _errors: int = attrs.field(init=False, default=0)
    _unknown: set[str] = attrs.field(init=False, factory=set)
    """Paths of files whose residency is unknown, as of the last pass or scan."""
    _pass_unknown: set[str] = attrs.field(init=False, factory=set)
    _passes: int = attrs.field(init=False, default=0)
    _pass_id: int = attrs.field(init=False, default=0)
    _verifying: bool = attrs.field(init=False, default=False)
    _last_error: str | None = attrs.field(init=False, default=None)

    @property
    def name(self) -> str:
        return "residency"

    # -- scopes --------------------------------------------------------------------------

    def add_scope(self, root: str) -> None:
        self._roots[root] = self._roots.get(root, 0) + 1

    def remove_scope(self, root: str) -> None:
        left = self._roots.get(root, 0) - 1
        if left > 0:
            self._roots[root] = left
        else:
            self._roots.pop(root, None)

    def _outer_roots(self) -> list[str]:
        roots = sorted(self._roots)
        return [r for r in roots if not any(o != r and is_under(r, o) for o in roots)]

    # -- running -------------------------------------------------------------------------

    def request_pass(self) -> None:
        """Start the next pass now instead of at the end of the interval."""
        self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self._active = True
        task_status.started()
        try:
            while True:
                started = time.monotonic()
                await self.scan_all()
                with anyio.move_on_after(self.interval - (time.monotonic() - started)):
                    await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            self._active = False

    async def scan_all(self) -> None:
        """One full pass over every scope; files gone since the last pass are reported."""
        self._pass_id += 1
        pass_id = self._pass_id
        self._verifying = pass_id % self.verify_every == 0
        self._pass_unknown = set()
        for root in self._outer_roots():
            await self._scan(root, None)
        async with self._lock:
            with anyio.CancelScope(shield=True):
                batch = await anyio.to_thread.run_sync(self._vanished, pass_id)
                self._apply(batch, None)
                # Unknown files that were not met again are gone (or out of every scope).
                self._unknown = self._pass_unknown
        self._passes += 1

    async def introduce(self, root: str, intro: Introduction) -> None:
        await self._scan(root, intro)

    async def _scan(self, root: str, intro: Introduction | None) -> None:
        files = _walk(root)
        while True:
            async with self._lock:
                # Shielded: a batch checked in the thread has updated the known maps, so its
                # observations must reach the store even if the scan is being cancelled.
                with anyio.CancelScope(shield=True):
                    batch = await anyio.to_thread.run_sync(
                        self._check_batch, files, intro is not None
                    )
                    self._apply(batch, intro)
            if batch.files < self.batch_files:
                return

    def _apply(self, batch: _Batch, intro: Introduction | None) -> None:
        sink = self.sink
        for dev, ino in sink.learn(batch.notes):
            sink.relocate(dev, ino, self._present(dev, ino))
        if intro is not None:
            intro.cover(batch.walked)
        if batch.observations:
            sink.ingest(batch.observations)
        if batch.intro and intro is not None:
            intro.deliver(batch.intro)
        for dev, ino, gen in batch.gone:
            sink.unlearn(dev, ino)
            sink.store.retire((dev, ino, gen))
        self._observations += len(batch.observations) + len(batch.intro)
        self._errors += batch.errors
        self._unknown.update(batch.unknown)
        self._unknown.difference_update(batch.checked_unknown)
        self._pass_unknown.update(batch.unknown)
        if batch.last_error is not None:
            self._last_error = batch.last_error

    # -- worker-thread side ---------------------------------------------------------------

    def _check_batch(self, files: Iterator[str], intro: bool) -> _Batch:
        batch = _Batch()
        for path in files:
            batch.files += 1
            try:
                self._check(path, intro, batch)
            except FileNotFoundError:
                pass
            except ResidencyUnknown:
                batch.unknown.append(path)
            except OSError as exc:
                batch.errors += 1
                batch.last_error = f"{path}: {exc.strerror or exc}"
            if batch.files >= self.batch_files:
                break
        return batch

    def _check(self, path: str, intro: bool, batch: _Batch) -> None:
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except PermissionError:
            batch.unknown.append(path)
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return
            counts = _kernel.cachestat(fd)
            if path in self._unknown:  # read under the lock, like every worker-side access
                batch.checked_unknown.append(path)
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
            if known is not None and known.signature == signature and not self._verifying:
                known.stamp = self._pass_id
                if intro:
                    key = (st.st_dev, st.st_ino, known.gen)
                    batch.add_runs(batch.intro, key, known.cached, _ADDED)
                    batch.add_runs(batch.intro, key, known.dirty, _DIRTY)
                return
            gen = _kernel.inode_generation(fd)
            pages = math.ceil(st.st_size / _kernel.PAGE_SIZE)
            cached = _kernel.mincore(fd, st.st_size) if counts.cache else b""
            dirty = b""
            if counts.dirty:
                runs = _kernel.dirty_runs(fd, st.st_size, counts.dirty)
                dirty = _pagemap.from_runs(runs, pages)
        finally:
            os.close(fd)
        self._record(batch, ident, _Known(gen, signature, cached, dirty, self._pass_id), intro)

    def _record(self, batch: _Batch, ident: tuple[int, int], fresh: _Known, intro: bool) -> None:
        """Diff a file's fresh map against the last one, and keep the fresh one."""
        gen, cached, dirty = fresh.gen, fresh.cached, fresh.dirty
        known = self._known.get(ident)
        old_cached = old_dirty = b""
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
        if intro:
            batch.add_runs(batch.intro, key, _pagemap.and_(old_cached, cached), _ADDED)
            batch.add_runs(batch.intro, key, _pagemap.and_(old_dirty, dirty), _DIRTY)
        if cached.count(1) or dirty.count(1):
            self._known[ident] = fresh
        else:
            self._known.pop(ident, None)

    def _present(self, dev: int, ino: int) -> list[tuple[int, int, int]]:
        known = self._known.get((dev, ino))
        if known is None:
            return []
        cached = [(first, count, _ADDED) for first, count in _pagemap.runs(known.cached)]
        return cached + [(first, count, _DIRTY) for first, count in _pagemap.runs(known.dirty)]

    def _vanished(self, pass_id: int) -> _Batch:
        batch = _Batch()
        for ident in [i for i, k in self._known.items() if k.stamp < pass_id]:
            known = self._known.pop(ident)
            key = (ident[0], ident[1], known.gen)
            batch.add_runs(batch.observations, key, known.cached, _REMOVED)
            batch.gone.append(key)
        return batch

    # -- status --------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        return SourceStatus(
            name=self.name,
            active=self._active,
            observations=self._observations,
            errors=self._errors,
            unknown=len(self._unknown),
            passes=self._passes,
            last_error=self._last_error,
        )
