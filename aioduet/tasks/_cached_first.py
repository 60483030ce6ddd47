"""``cached_first``: visit every file of a tree once, the most cached first.

Duet's inode priority tree, as its rsync and defrag used it: a maintenance tool that must
process every file under a directory processes first the files another program has just
brought into the page cache, so that it reads them from memory instead of the device.
"""

from __future__ import annotations

import errno
import heapq
import os
import stat
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import attrs

from .. import _kernel
from .._model import Bmap, Event, Uuid

if TYPE_CHECKING:
    from ..abc import Task

__all__ = ["CachedBatches", "CachedFile", "CachedFirst", "cached_first", "walk_files"]

_ABSORB = 4096
"""Items taken from the task per absorb step (more wait for the next pick)."""
_STAT_BATCH = 512
"""Paths stat'ed per worker-thread call while the order is read."""
_SLACK = 1.0 / 64
"""How far below its priority a verified fraction may be before the file is re-queued."""
_AHEAD = 64
"""Files of the order probed per worker-thread call (one thread hop per pick costs more)."""
_VERIFY = 16
"""Cached candidates verified per worker-thread call, best first."""


@attrs.frozen
class CachedFile:
    """A file picked by :func:`cached_first`."""

    path: str
    """Its absolute path (as given by the order, or found by the walk)."""
    uuid: Uuid
    """Its identity, as items name it."""
    size: int
    """Its size in bytes when picked."""
    cached: float
    """The fraction of its pages known to be cached when picked (0 to 1)."""
    revisit: bool = False
    """True when it is picked again because it was dirtied after its first pick."""


@attrs.define(eq=False)
class _File:
    seq: int
    path: str
    dev: int
    ino: int
    pages: int
    gen: int | None = None
    cached: int = 0
    version: int = 0
    picked: bool = False
    again: bool = False

    def fraction(self) -> float:
        return min(self.cached, self.pages) / self.pages if self.pages else 0.0


def walk_files(root: str) -> Iterator[str]:
    """Regular files under ``root`` in sorted path order; no symlinks, no other filesystems.

    Directories that cannot be read are skipped. Blocks: run it in a worker thread.
    """
    root_dev = os.stat(root).st_dev
    stack = [_sorted_entries(root)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                yield entry.path
            elif (
                entry.is_dir(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_dev == root_dev
            ):
                stack.append(_sorted_entries(entry.path))
        except OSError:
            continue


def _sorted_entries(directory: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return iter(sorted(it, key=lambda e: e.name))
    except OSError:
        return iter(())


def _stat_files(paths: list[str]) -> list[tuple[str, int, int, int]]:
    """``(path, dev, ino, size)`` of the regular files among ``paths``; others dropped."""
    found = []
    for path in paths:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append((path, st.st_dev, st.st_ino, st.st_size))
    return found


def _read_order(paths: Iterable[str]) -> list[tuple[str, int, int, int]]:
    """Stat the whole order (a worker thread's job)."""
    found: list[tuple[str, int, int, int]] = []
    batch: list[str] = []
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise ValueError(f"order must give absolute paths as str, not {path!r}")
        batch.append(path)
        if len(batch) >= _STAT_BATCH:
            found.extend(_stat_files(batch))
            batch.clear()
    found.extend(_stat_files(batch))
    return found


def _probe(path: str, dev: int, ino: int) -> tuple[int, int, int] | None:
    """``(generation, size, cached pages)`` of the file at ``path`` if it is still that inode.

    None when it is gone or replaced. A file that cannot be opened gives generation 0 and
    no cached pages (the caller will meet the error when it reads the file).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        return (0, st.st_size, 0) if (st.st_dev, st.st_ino) == (dev, ino) else None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
            return None
        try:
            gen = _kernel.inode_generation(fd)
        except OSError:
            gen = 0
        try:
            cached = _kernel.cachestat(fd).cache
        except OSError:
            cached = 0
        return gen, st.st_size, cached
    finally:
        os.close(fd)


def _probe_many(entries: list[_File]) -> list[tuple[int, int, int] | None]:
    return [_probe(entry.path, entry.dev, entry.ino) for entry in entries]


def _check_limits(max_files: int, max_bytes: int) -> None:
    if max_files < 1:
        raise ValueError(f"max_files must be at least 1, not {max_files}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must not be negative, not {max_bytes}")


def _pages(size: int) -> int:
    return -(-size // _kernel.PAGE_SIZE)


@attrs.define(eq=False)
class CachedFirst:
    """The async iterator that :func:`cached_first` returns; see there.

    ``total``, ``picked``, ``from_cache`` and ``vanished`` tell the progress.
    """

    _task: Task = attrs.field(alias="task")
    _order: Iterable[str] | None = attrs.field(alias="order")
    _revisit: bool = attrs.field(alias="revisit")
    _files: dict[tuple[int, int], _File] = attrs.field(init=False, factory=dict)
    _sequence: list[_File] = attrs.field(init=False, factory=list)
    _next: int = attrs.field(init=False, default=0)
    _heap: list[tuple[float, int, int, tuple[int, int]]] = attrs.field(init=False, factory=list)
    _again: deque[_File] = attrs.field(init=False, factory=deque)
    _ahead: dict[int, tuple[int, int, int] | None] = attrs.field(init=False, factory=dict)
    """Probes of the next files of the order, by sequence number."""
    _verified: deque[tuple[_File, float, int, int]] = attrs.field(init=False, factory=deque)
    """Cached candidates checked by cachestat, best first: ``(file, fraction, gen, size)``."""
    _started: bool = attrs.field(init=False, default=False)
    total: int = attrs.field(init=False, default=0)
    """Files in the order (known once the first file is picked)."""
    picked: int = attrs.field(init=False, default=0)
    """Files picked so far (revisits included)."""
    from_cache: int = attrs.field(init=False, default=0)
    """Picks made because the file was cached, ahead of the order."""
    vanished: list[str] = attrs.field(init=False, factory=list)
    """Paths of the order skipped because they were deleted or replaced when probed."""

    def __aiter__(self) -> CachedFirst:
        return self

    async def take(self, max_files: int = 64, max_bytes: int = 8 << 20) -> list[CachedFile]:
        """The next picks, as many as fit: an empty list when every file was picked.

        Picks up to ``max_files`` files whose sizes add up to at most ``max_bytes`` (the
        first one whatever its size), each exactly as iteration would; a file that was not
        cached when picked ends the batch, so that what other programs read while it is
        read from the device is seen before the next pick. A tool that hands
        files to a worker thread saves a thread hop per file by handing over a batch: with
        small files the hops, not the reads, cost the most. Larger batches see the cache
        less often: what another program reads meanwhile waits for the next batch.

        Raises:
            ValueError: ``max_files`` is below 1 or ``max_bytes`` is negative.
        """
        _check_limits(max_files, max_bytes)
        picks: list[CachedFile] = []
        size = 0
        while len(picks) < max_files:
            try:
                picked = await self.__anext__()
            except StopAsyncIteration:
                break
            picks.append(picked)
            size += picked.size
            if size >= max_bytes or not picked.cached:
                break  # full, or a file to read from the device: look at the cache again
        return picks

    def batches(self, max_files: int = 64, max_bytes: int = 8 << 20) -> CachedBatches:
        """Iterate over :meth:`take`'s batches: ``async for files in picks.batches(): ...``."""
        _check_limits(max_files, max_bytes)
        return CachedBatches(self, max_files, max_bytes)

    async def __anext__(self) -> CachedFile:
        if not self._started:
            await self._start()
        while True:
            self._absorb()
            picked = await self._pick_cached()
            if picked is None:
                picked = await self._pick_in_order()
            if picked is not None:
                return picked
            if not self._again:
                raise StopAsyncIteration
            entry = self._again.popleft()
            entry.again = False
            chosen = await self._take(entry, revisit=True)
            if chosen is not None:
                return chosen

    async def _start(self) -> None:
        self._started = True
        order = walk_files(self._task.path) if self._order is None else self._order
        found = await anyio.to_thread.run_sync(_read_order, order)
        for path, dev, ino, size in found:
            if (dev, ino) in self._files:
                continue  # a hard link seen before: one visit per inode
            entry = _File(len(self._sequence), path, dev, ino, _pages(size))
            self._files[dev, ino] = entry
            self._sequence.append(entry)
        self.total = len(self._sequence)

    def _absorb(self) -> None:
        """Take the items waiting for the task; update the priorities they change."""
        if self._task.closed:
            return
        for item in self._task.fetch_nowait(_ABSORB):
            entry = self._files.get((item.uuid.dev, item.uuid.ino))
            if entry is None:
                continue  # not in the order, or the OVERFLOW marker: picks verify anyway
            entry.gen = item.uuid.gen
            if item.state & Event.ADDED:
                entry.cached += item.count
            elif item.state & Event.REMOVED:
                entry.cached = max(0, entry.cached - item.count)
            if entry.picked:
                if self._revisit and item.state & Event.DIRTY and not entry.again:
                    entry.again = True
                    self._again.append(entry)
                continue
            self._push(entry)

    def _push(self, entry: _File) -> None:
        entry.version += 1
        fraction = entry.fraction()
        if fraction > 0:
            key = (entry.dev, entry.ino)
            heapq.heappush(self._heap, (-fraction, entry.seq, entry.version, key))

    async def _pick_cached(self) -> CachedFile | None:
        while True:
            while self._verified:
                entry, fraction, gen, size = self._verified.popleft()
                if entry.picked or entry.fraction() < fraction - _SLACK:
                    continue  # picked meanwhile, or items since say it was evicted
                self.from_cache += 1
                return await self._chosen(entry, gen, size, revisit=False)
            if not await self._verify_best():
                return None

    async def _verify_best(self) -> bool:
        """Probe the best candidates of the heap in one thread call; False when it is empty.

        Those still as cached as their items said join :attr:`_verified`; the others go back
        into the heap with their true fraction (or leave it, when evicted in full).
        """
        batch: list[tuple[float, _File]] = []
        while self._heap and len(batch) < _VERIFY:
            negative, _seq, version, key = heapq.heappop(self._heap)
            entry = self._files[key]
            if not entry.picked and version == entry.version:
                batch.append((-negative, entry))
        if not batch:
            return False
        results = await anyio.to_thread.run_sync(_probe_many, [entry for _, entry in batch])
        for (fraction, entry), probed in zip(batch, results, strict=True):
            if entry.picked:
                continue
            if probed is None:
                self._vanish(entry)  # deleted or replaced since the order was read
                continue
            gen, size, cached = probed
            entry.pages, entry.cached = _pages(size), cached
            if entry.fraction() < fraction - _SLACK:
                self._push(entry)  # evicted since its items came: back in the queue
            else:
                self._verified.append((entry, entry.fraction(), gen, size))
        return True

    async def _pick_in_order(self) -> CachedFile | None:
        while self._next < len(self._sequence):
            entry = self._sequence[self._next]
            self._next += 1
            if entry.picked:
                continue
            if entry.seq not in self._ahead:
                await self._probe_ahead()
            probed = self._ahead.pop(entry.seq)
            if probed is None:
                self._vanish(entry)
                continue
            gen, size, cached = probed
            entry.pages, entry.cached = _pages(size), cached
            return await self._chosen(entry, gen, size, revisit=False)
        return None

    async def _probe_ahead(self) -> None:
        """Probe the next files of the order that are not picked yet, in one thread call."""
        self._ahead.clear()
        batch = []
        for entry in self._sequence[self._next - 1 :]:
            if not entry.picked:
                batch.append(entry)
                if len(batch) == _AHEAD:
                    break
        results = await anyio.to_thread.run_sync(_probe_many, batch)
        self._ahead.update(zip((entry.seq for entry in batch), results, strict=True))

    async def _take(self, entry: _File, *, revisit: bool) -> CachedFile | None:
        probed = await anyio.to_thread.run_sync(_probe, entry.path, entry.dev, entry.ino)
        if probed is None:
            self._vanish(entry)
            return None
        gen, size, cached = probed
        entry.pages, entry.cached = _pages(size), cached
        return await self._chosen(entry, gen, size, revisit=revisit)

    def _vanish(self, entry: _File) -> None:
        entry.picked = True
        self.vanished.append(entry.path)

    async def _chosen(self, entry: _File, gen: int, size: int, *, revisit: bool) -> CachedFile:
        entry.picked = True
        entry.version += 1
        self.picked += 1
        if entry.gen is None:
            entry.gen = gen
        uuid = Uuid(entry.dev, entry.ino, entry.gen)
        if not self._revisit and not self._task.closed:
            await self._task.bmap(Bmap.SET, uuid)  # no more items for it
        return CachedFile(entry.path, uuid, size, entry.fraction(), revisit)


@attrs.frozen
class CachedBatches:
    """The async iterator of :meth:`CachedFirst.batches`: lists of picks, never empty."""

    picks: CachedFirst
    max_files: int
    max_bytes: int

    def __aiter__(self) -> CachedBatches:
        return self

    async def __anext__(self) -> list[CachedFile]:
        batch = await self.picks.take(self.max_files, self.max_bytes)
        if not batch:
            raise StopAsyncIteration
        return batch


def cached_first(
    task: Task, order: Iterable[str] | None = None, *, revisit: bool = False
) -> CachedFirst:
    """Iterate over every regular file of ``order`` once, the most cached first.

    Each step picks the file not yet picked with the largest cached fraction that the task's
    EXISTS items report (checked with ``cachestat`` when picked: a file evicted since is put
    back with its true fraction); when no file is known to be cached, the next one in
    ``order``. Picking costs O(log n) (a heap with lazy deletion), never a rescan. Picked
    files are marked done (:meth:`Task.bmap` ``SET``), so the task gets no more items for them.

    Args:
        task: a task whose mask includes ``Event.EXISTS`` (and ``Event.MODIFIED`` with
            ``revisit``), registered on the directory to process.
        order: absolute paths of the files in the tool's own order (path, on-disk, inode
            order...): they define the files visited. Read in full, in a worker thread,
            before the first file is picked; files that are not regular or gone are
            skipped, hard links visited once. ``None``: every regular file under
            ``task.path`` in sorted path order, without following symlinks or entering
            other filesystems (:func:`walk_files`).
        revisit: files dirtied after they were picked are picked again, once per pick,
            after the order is done (``CachedFile.revisit`` is True), so that a tool can
            process what changed while it ran; the iteration ends when no picked file has
            been dirtied since. Without it (the default) a file is picked exactly once and
            later changes are the caller's business; with it, files are not marked done, so
            that the task keeps seeing their DIRTY bits.

    Raises:
        ValueError: the task's mask lacks EXISTS, or MODIFIED with ``revisit``; ``order``
            gives a path that is not absolute (when the first file is picked).
    """
    if not task.mask & Event.EXISTS:
        raise ValueError("cached_first needs a task registered for Event.EXISTS")
    if revisit and not task.mask & Event.MODIFIED:
        raise ValueError("cached_first(revisit=True) needs a task registered for MODIFIED too")
    if isinstance(order, str):
        raise TypeError("order must be an iterable of paths, not a single str")
    return CachedFirst(task=task, order=order, revisit=revisit)
