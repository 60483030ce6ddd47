"""The ``tracepoints`` source: exact page-cache events from the kernel's tracepoints (root).

Kernel interface: tracefs (see :mod:`._tracefs`), a private instance with these events,
filtered in the kernel by the devices of the scopes, read from the per-CPU binary
``trace_pipe_raw`` ring buffers on the event loop:

* ``filemap/mm_filemap_add_to_page_cache`` -> ADDED, ``mm_filemap_delete_from_page_cache``
  -> REMOVED, for ``1 << order`` pages from ``index`` (one event per folio; ext4 uses folios
  up to order 9 since 6.16). Filter: ``s_dev``.
* ``writeback/writeback_dirty_folio`` -> DIRTY. The event has the folio's first index but no
  order: the source remembers the order of every large folio it saw added (order-0 folios
  cost nothing) and uses it; a folio added before the source started counts as one page,
  and so does one split since (an event inside a remembered folio shows the split).
  Filter: the bdi name (``"254:0"``) of each scope's block device, where it has one.
* ``writeback/sb_clear_inode_writeback`` (no folio of the inode is under writeback any more;
  filter ``dev``) and ``writeback/writeback_single_inode`` -> FLUSHED for the pages the source
  saw dirtied in that inode and that cachestat now finds neither dirty nor under writeback
  (without a known path, only the first event flushes them, unverified). There is no
  per-folio writeback-done tracepoint for ext4 data.

Keys are ``(dev, ino, gen)``. The events carry no generation: it comes from
``FS_IOC_GETVERSION`` on a path of the inode in the sink's path index, or from the
``resolve`` hook (file handles), and is cached per inode until the number changes hands.
On ext4, ``ext4/ext4_free_inode`` and ``ext4/ext4_allocate_inode`` (filter ``dev``) say when
that happens, in order with the page events, so a deleted file's last REMOVED carry its own
generation and a new file's first ADDED the new one; elsewhere the cached generation is
dropped when the path index learns or forgets the inode. **An inode with no known path is
keyed with generation 0**, so its observations may not merge with those the residency source
makes for it once its path is known.

What it cannot see: order across CPUs within one drain is not exact (each CPU's buffer is in
order; events of one page on two CPUs within 50 ms may be handed over in the wrong order);
mmap dirtying that never reaches ``writeback_dirty_folio``; tmpfs (no add tracepoint).
Ring-buffer loss (the kernel's ``RB_MISSED_EVENTS`` flag), unparsable pages (none of their
records is used) and records of impossible folio orders become ``sink.lost(None)``: OVERFLOW
and a rescan.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import attrs

from .. import _kernel
from .._handles import generation_at
from .._model import Event
from .._status import SourceStatus
from ..errors import SourceUnavailable
from ..store import Key, Observation
from . import _tracefs
from ._base import Introduction, Sink
from ._counters import SourceCounters
from ._scopes import Scopes

__all__ = ["EVENTS", "TracepointSource", "unavailable_reason"]

ADD = "filemap/mm_filemap_add_to_page_cache"
DELETE = "filemap/mm_filemap_delete_from_page_cache"
DIRTY = "writeback/writeback_dirty_folio"
CLEAR = "writeback/sb_clear_inode_writeback"
SINGLE = "writeback/writeback_single_inode"
FREE = "ext4/ext4_free_inode"
ALLOC = "ext4/ext4_allocate_inode"
TRUNCATE = "ext4/ext4_truncate_exit"
EVENTS: dict[str, tuple[str, ...]] = {
    ADD: ("i_ino", "index", "s_dev", "order"),
    DELETE: ("i_ino", "index", "s_dev", "order"),
    DIRTY: ("name", "ino", "index"),
    CLEAR: ("dev", "ino"),
    SINGLE: ("name", "ino", "wrote"),
    FREE: ("dev", "ino"),
    ALLOC: ("dev", "ino"),
    TRUNCATE: ("dev", "ino"),
}
"""The events used, with the fields read from each (names from their ``format`` files)."""

Resolver = Callable[[int, int], "tuple[str, int] | None"]
"""``resolve(dev, ino) -> (path, generation)`` for inodes with no known path, or None."""

_ADDED, _REMOVED = int(Event.ADDED), int(Event.REMOVED)
_DIRTY, _FLUSHED = int(Event.DIRTY), int(Event.FLUSHED)
_KEY_CACHE = 1 << 16
_PAGES_PER_WAKEUP = 256
_HOLD = 0.002
"""Seconds before the next read when records were held back by the last one."""
_FAR_AHEAD = 1_000_000_000
"""Nanoseconds past the start of a read beyond which a record's stamp is not believed."""
_MAX_ORDER = 20
"""Above any folio a page cache holds (the largest, hugetlbfs' 1 GiB pages on x86-64 or 16 GiB
on 64 KiB-page arm64, are order 18): a larger ``order`` is a corrupted record, not a run of
``1 << order`` pages to walk."""


def _drop_covering(folios: dict[int, int], index: int) -> None:
    """Forget the large folio that covers ``index`` without starting there: it was split.

    A folio of order ``o`` starts at a multiple of ``2 ** o``, so the only candidate of each
    order is ``index`` rounded down to one; a few lookups, whatever the file.
    """
    order = 1
    while order <= _MAX_ORDER:
        start = index >> order << order
        if start != index and folios.get(start) == order:
            del folios[start]
            return
        if not start:
            return
        order += 1


def unavailable_reason(tracefs: str = _tracefs.TRACEFS) -> str | None:
    """Why the tracepoints source cannot run here, or None when it can.

    As root this mounts tracefs when it is absent, as the source itself would.
    """
    if os.geteuid() != 0:
        return f"the tracepoints need root (running as uid {os.geteuid()})"
    try:
        _tracefs.mount_tracefs(tracefs)
    except SourceUnavailable as exc:
        return exc.strerror or str(exc)
    missing = [event for event in (ADD, DELETE) if not os.path.isdir(f"{tracefs}/events/{event}")]
    if missing:
        return f"the kernel lacks the page-cache events {', '.join(missing)}"
    return None


def _bdi_name(st_dev: int, sysfs: str = "/sys") -> str | None:
    """The backing-device name that writeback events record for a filesystem's files.

    A block device's is its disk's; a filesystem on an anonymous device with a bdi of its
    own (FUSE, NFS) has one named after the device, ``MAJ:MIN`` in /sys/class/bdi.
    """
    number = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    base = f"{sysfs}/dev/block/{number}"
    for link in (f"{base}/bdi", f"{base}/../bdi"):  # a partition's bdi is its disk's
        with contextlib.suppress(OSError):
            return os.path.basename(os.readlink(link))
    if os.path.isdir(f"{sysfs}/class/bdi/{number}"):
        return number
    return None


@attrs.define(eq=False)
class TracepointSource:
    """Exact ADDED/REMOVED/DIRTY/FLUSHED observations from page-cache tracepoints.

    Args:
        sink: where observations go (``sink.index`` gives paths, hence generations).
        buffer_kb: per-CPU ring-buffer size in KiB (the kernel rounds it up to pages; small
            buffers lose events under load, which is reported as OVERFLOW).
        drain_interval: seconds between drains when the kernel does not wake us (it does
            only once ``buffer_percent`` of a buffer is full).
        gather: seconds to wait after a wake-up before reading, so that one read takes in
            what the kernel writes meanwhile: under a stream of page-cache events, a few
            hundred reads a second instead of one per event, for that much more latency.
        resolve: finds a path and generation for an inode missing from the index.
        tracefs: the tracefs mount point.
    """

    sink: Sink
    buffer_kb: int = attrs.field(default=4096, validator=attrs.validators.ge(1))
    drain_interval: float = attrs.field(default=0.05, validator=attrs.validators.gt(0))
    gather: float = attrs.field(default=0.005, validator=attrs.validators.ge(0))
    resolve: Resolver | None = None
    tracefs: str = _tracefs.TRACEFS
    _scopes: Scopes = attrs.field(init=False, factory=Scopes)
    _devs: dict[str, int] = attrs.field(init=False, factory=dict)
    _instance: _tracefs.Instance | None = attrs.field(init=False, default=None)
    _refilter: anyio.Event | None = attrs.field(init=False, default=None)
    _wanted: int = attrs.field(init=False, default=0)
    """Scope changes so far; the kernel filters reflect the first :attr:`_applied` of them."""
    _applied: int = attrs.field(init=False, default=0)
    _filtered: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    """Set (and replaced) whenever filters reach the kernel, or the source stops."""
    _ids: dict[str, int] = attrs.field(init=False, factory=dict)
    _keys: dict[tuple[int, int], Key] = attrs.field(init=False, factory=dict)
    _orders: dict[tuple[int, int], dict[int, int]] = attrs.field(init=False, factory=dict)
    _dirty: dict[tuple[int, int], dict[int, int]] = attrs.field(init=False, factory=dict)
    _bdis: dict[bytes, list[int]] = attrs.field(init=False, factory=dict)
    _ends: dict[tuple[int, int], int] = attrs.field(init=False, factory=dict)
    """Files cut short inside a large folio: the page their data ends before."""
    _lifecycle: set[int] = attrs.field(init=False, factory=set)
    """Kernel devs whose inodes' frees and allocations the events have shown (ext4)."""
    _freed: list[Key] = attrs.field(init=False, factory=list)
    """Keys of inodes freed in the records being handled: retired once their pages are in."""
    _counts: SourceCounters = attrs.field(init=False, factory=SourceCounters)
    _events: int = attrs.field(init=False, default=0)
    _held: tuple[list[int], list[tuple[Any, ...]]] = attrs.field(
        init=False, factory=lambda: ([], [])
    )
    """Records stamped after the last read began (time stamps, records), for the next read."""
    _ready: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    """Set when some CPU's buffer is readable."""
    _drained: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    """Set (and replaced) after every read of all the buffers."""

    @property
    def name(self) -> str:
        return "tracepoints"

    @property
    def instance(self) -> _tracefs.Instance | None:
        """The tracefs instance while running."""
        return self._instance

    @property
    def events(self) -> int:
        """Trace records read so far."""
        return self._events

    # -- scopes --------------------------------------------------------------------------

    def add_scope(self, root: str) -> None:
        if self._scopes.add(root):
            self._devs[root] = os.stat(root).st_dev
            self._changed()

    def remove_scope(self, root: str) -> None:
        if self._scopes.remove(root):
            self._devs.pop(root, None)
            self._changed()

    def _changed(self) -> None:
        self._wanted += 1
        if self._refilter is not None:
            self._refilter.set()

    async def introduce(self, root: str, intro: Introduction) -> None:
        """Wait until the kernel filters take in ``root``; the residency source then scans.

        Events that the old filters dropped are covered by that scan, which starts later;
        without the wait, a file read between registration and the new filters would be
        missed by both.
        """
        wanted = self._wanted
        while self._refilter is not None and self._applied < wanted:
            await self._filtered.wait()

    def _filters_reached_kernel(self, changes: int) -> None:
        self._applied = changes
        self._filtered.set()
        self._filtered = anyio.Event()

    def _filters(self) -> dict[str, str]:
        devs = sorted(set(self._devs.values()))
        kdevs = [_tracefs.kernel_dev(d) for d in devs] or [0]  # no fs has dev 0: nothing
        bdis: dict[bytes, list[int]] = {}
        for dev in devs:
            name = _bdi_name(dev)
            if name is not None:
                bdis.setdefault(name.encode(), []).append(dev)
        self._bdis = bdis
        by_name = " || ".join(f'name == "{n.decode()}"' for n in sorted(bdis))
        if len(bdis) < len(devs):
            by_name = ""  # some scope has no known bdi: take every device's writeback events
        return {
            ADD: " || ".join(f"s_dev == {k}" for k in kdevs),
            DELETE: " || ".join(f"s_dev == {k}" for k in kdevs),
            CLEAR: " || ".join(f"dev == {k}" for k in kdevs),
            DIRTY: by_name or ("" if devs else 'name == "-"'),
            SINGLE: by_name or ("" if devs else 'name == "-"'),
            FREE: " || ".join(f"dev == {k}" for k in kdevs),
            ALLOC: " || ".join(f"dev == {k}" for k in kdevs),
            TRUNCATE: " || ".join(f"dev == {k}" for k in kdevs),
        }

    def _apply_filters(self, instance: _tracefs.Instance, filters: dict[str, str]) -> None:
        for event in instance.formats:
            instance.set_filter(event, filters[event])

    # -- running -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        if os.geteuid() != 0:
            raise SourceUnavailable(errno.EPERM, "the tracepoints source needs root")
        # From here on, scope changes set the event; those made while the instance is set up
        # are applied as soon as the filters are kept.
        self._refilter = anyio.Event()
        changes = self._wanted
        filters = self._filters()

        def setup() -> _tracefs.Instance:
            instance = _tracefs.Instance.create(EVENTS, buffer_kb=self.buffer_kb, root=self.tracefs)
            try:
                if ADD not in instance.formats or DELETE not in instance.formats:
                    raise SourceUnavailable(  # noqa: TRY301 - the handler closes the instance
                        errno.ENOENT, f"the filemap tracepoints are missing: {instance.missing}"
                    )
                self._apply_filters(instance, filters)
                instance.enable()
            except BaseException:
                instance.close()
                raise
            return instance

        try:
            instance = await anyio.to_thread.run_sync(setup)
        except BaseException:
            self._refilter = None
            self._filters_reached_kernel(self._wanted)
            raise
        fds: list[int] = []
        settle = None
        try:
            parser = self.bind(instance)
            for cpu in instance.cpus():
                fds.append(instance.open_pipe(cpu))
            self._counts.active = True
            self.sink.settlers.append(settle := partial(self._settle, fds, parser, instance))
            self._listen(True)
            self._filters_reached_kernel(changes)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_filters, instance, filters)
                for fd in fds:
                    tg.start_soon(self._watch, fd)
                tg.start_soon(self._read, fds, parser, instance)
                task_status.started()
        finally:
            self._counts.active = False
            if settle in self.sink.settlers:
                self.sink.settlers.remove(settle)
            self._listen(False)
            self._refilter = None
            self._filters_reached_kernel(self._wanted)  # nobody waits for a stopped source
            self._instance = None
            for fd in fds:
                anyio.notify_closing(fd)
                os.close(fd)
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(instance.close)

    def _listen(self, on: bool) -> None:
        """Hear (while running) of inodes the path index learns or forgets, and of the dirty
        pages scans find."""
        sink = self.sink
        if on:
            sink.inode_listeners.append(self._forget_key)
            sink.dirty_listeners.append(self._learn_dirty)
            return
        if self._forget_key in sink.inode_listeners:
            sink.inode_listeners.remove(self._forget_key)
        if self._learn_dirty in sink.dirty_listeners:
            sink.dirty_listeners.remove(self._learn_dirty)

    def bind(self, instance: _tracefs.Instance) -> _tracefs.PageParser:
        """Use ``instance`` (set up with :data:`EVENTS`); returns the parser of its pages.

        :meth:`run` does this; benchmarks call it to drive :meth:`drain` by hand.
        """
        self._instance = instance
        self._ids = {event: fmt.id for event, fmt in instance.formats.items()}
        return instance.parser(EVENTS)

    def filters(self) -> dict[str, str]:
        """The kernel filter of each event for the current scopes."""
        return self._filters()

    async def _keep_filters(self, instance: _tracefs.Instance, applied: dict[str, str]) -> None:
        while True:
            assert self._refilter is not None
            await self._refilter.wait()
            self._refilter = anyio.Event()
            changes = self._wanted
            filters = self._filters()
            if filters != applied:
                await anyio.to_thread.run_sync(self._apply_filters, instance, filters)
                applied = filters
            self._filters_reached_kernel(changes)

    async def _watch(self, fd: int) -> None:
        """Wake the reader when this CPU's buffer holds something, once per read."""
        while True:
            await anyio.wait_readable(fd)
            drained = self._drained
            self._ready.set()
            await drained.wait()

    async def _read(
        self, fds: list[int], parser: _tracefs.PageParser, instance: _tracefs.Instance
    ) -> None:
        interval, gather = self.drain_interval, self.gather
        ordered = instance.clock == "mono"
        while True:
            # Records stamped after the last read began wait for the next one, soon.
            with anyio.move_on_after(_HOLD if self._held[0] else interval):
                await self._ready.wait()
                if gather:
                    await anyio.sleep(gather)
            self._ready = anyio.Event()
            while self.drain(fds, parser, instance.page_size, ordered=ordered) >= _PAGES_PER_WAKEUP:
                await anyio.lowlevel.checkpoint()
            self._drained.set()
            self._drained = anyio.Event()

    def _settle(
        self, fds: list[int], parser: _tracefs.PageParser, instance: _tracefs.Instance
    ) -> None:
        """Drain every CPU's ring buffer now (see :meth:`Sink.settle`)."""
        ordered = instance.clock == "mono"
        while self.drain(fds, parser, instance.page_size, ordered=ordered) >= _PAGES_PER_WAKEUP:
            pass

    def drain(
        self, fds: list[int], parser: _tracefs.PageParser, page_size: int, *, ordered: bool
    ) -> int:
        """Read, parse and hand over up to a batch of pages of each CPU; returns pages read.

        The kernel keeps one ring buffer per CPU, and a file's events may come from several
        (a thread that writes a file on one CPU and evicts it on another): handed over one
        CPU at a time, the eviction could come before the write. So the records of all CPUs
        are put in time-stamp order. With ``ordered`` (the ``mono`` trace clock), records
        stamped after this read began are held back for the next read: a CPU read earlier
        in this one may still have records stamped before them.
        """
        began = time.monotonic_ns()
        stamps, records = self._held
        streams = 1 if stamps else 0
        lost = 0
        pages = 0
        read, parse = os.read, parser.parse
        for fd in fds:
            before = len(records)
            taken = 0
            while taken < _PAGES_PER_WAKEUP:
                try:
                    page = read(fd, page_size)
                except BlockingIOError:
                    break
                if not page:
                    break
                taken += 1
                start = len(records)
                try:
                    missed = parse(page, records, stamps)
                except _tracefs.PageError as exc:
                    # The page is not laid out as we read it: the records before the error
                    # are suspect too. They are dropped with the rest; the rescan covers them.
                    del records[start:], stamps[start:]
                    self._counts.error(f"unparsable ring-buffer page: {exc}")
                    missed = -1
                if missed:
                    lost += missed if missed > 0 else 1
            pages = max(pages, taken)
            if len(records) > before:
                streams += 1
        if streams > 1:  # each stream is in order already
            order = sorted(range(len(stamps)), key=stamps.__getitem__)
            stamps = [stamps[i] for i in order]
            records = [records[i] for i in order]
        cut = bisect.bisect_right(stamps, began) if ordered else len(stamps)
        # A stamp far ahead of the clock is not one to wait for (a kernel or a parse we do
        # not follow): its record is handed over now rather than held for good.
        far = bisect.bisect_right(stamps, began + _FAR_AHEAD, cut) if ordered else len(stamps)
        self._held = (stamps[cut:far], records[cut:far])
        due = records if cut == len(records) else records[:cut] + records[far:]
        if due:
            self._events += len(due)
            self.handle(due)
        if lost:
            self._counts.lost += lost
            self._counts.overflows += 1
            self.sink.lost(None)
        return pages

    # -- records -------------------------------------------------------------------------

    def handle(self, records: list[tuple[Any, ...]]) -> None:
        """Turn parsed records (in time order) into observations for the sink."""
        ids = self._ids
        add_id, del_id = ids.get(ADD, -1), ids.get(DELETE, -1)
        obs: list[Observation] = []
        append = obs.append
        orders = self._orders
        key_of = self._key_of
        run_kind = run_dev = run_ino = -1
        run_first = run_end = 0
        corrupted = 0
        for record in records:
            kind = record[0]
            if kind == add_id or kind == del_id:  # noqa: PLR1714, SIM109 - no tuple on the hot path
                _, ino, index, kdev, order = record
                if order > _MAX_ORDER:
                    corrupted += 1
                    continue
                count = 1 << order
                inode = (kdev, ino)
                if order or inode in orders:
                    self._track_folio(inode, index, order, added=kind == add_id)
                if kind == del_id and inode in self._dirty:
                    self._undirty(inode, index, count)
                if kind == run_kind and ino == run_ino and kdev == run_dev and index == run_end:
                    run_end += count
                    continue
                if run_kind >= 0:
                    append((key_of(run_dev, run_ino, run_kind == del_id), run_first,
                            run_end - run_first,
                            _ADDED if run_kind == add_id else _REMOVED))  # fmt: skip
                run_kind, run_dev, run_ino = kind, kdev, ino
                run_first, run_end = index, index + count
                continue
            if run_kind >= 0:
                append((key_of(run_dev, run_ino, run_kind == del_id), run_first,
                        run_end - run_first,
                        _ADDED if run_kind == add_id else _REMOVED))  # fmt: skip
                run_kind = -1
            self._other(record, append)
        if run_kind >= 0:
            append((key_of(run_dev, run_ino, run_kind == del_id), run_first,
                    run_end - run_first,
                    _ADDED if run_kind == add_id else _REMOVED))  # fmt: skip
        if obs:
            self._counts.observations += len(obs)
            self.sink.ingest(obs)
        if self._freed:
            self._retire_freed()
        if corrupted:
            self._counts.error(f"{corrupted} trace records with a folio order above {_MAX_ORDER}")
            self._counts.lost += corrupted
            self._counts.overflows += 1
            self.sink.lost(None)

    def _retire_freed(self) -> None:
        """Deleted files: their entries go from the store once their last pages are told."""
        retire = self.sink.store.retire
        for key in self._freed:
            retire(key)
        self._freed.clear()

    def _truncated(self, inode: tuple[int, int], append: Callable[[Observation], None]) -> None:
        """A file was cut short. Its pages past the new end left the cache (each with its own
        event), except in a large folio that straddles the end and that the kernel could not
        split: it stays whole, its pages past the end are no longer the file's, and no event
        says so. They are REMOVED now, and its later events count only its pages in the file.
        """
        kdev, ino = inode
        dev = _tracefs.user_dev(kdev)
        for path in self.sink.index.paths(dev, ino):
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                break
        else:
            return
        end = -(-st.st_size // _kernel.PAGE_SIZE)
        self._ends[inode] = end
        # What the tasks were told of the file (the scans' maps follow this source's items).
        self.sink.cut(dev, ino, end)
        key = None
        for first, order in list(self._orders.get(inode, {}).items()):
            last = first + (1 << order)
            if first < end < last:  # a large folio this source saw added
                key = key or self._key_of(kdev, ino)
                append((key, end, last - end, _REMOVED))

    def _track_folio(self, inode: tuple[int, int], index: int, order: int, *, added: bool) -> None:
        """Remember the orders of an inode's large folios, as they are added and deleted."""
        end = self._ends.get(inode)
        if end is not None and (
            (added and index + (1 << order) > end)  # the file grew again
            or (not added and index < end < index + (1 << order))  # the straddler left
        ):
            del self._ends[inode]
        folios = self._orders.get(inode)
        if folios is not None:
            if index not in folios:
                _drop_covering(folios, index)
            if not added:
                folios.pop(index, None)
        if order and added:
            if folios is None:
                folios = self._orders[inode] = {}
            folios[index] = order
        elif folios is not None and not folios:
            del self._orders[inode]

    def _other(self, record: tuple[Any, ...], append: Callable[[Observation], None]) -> None:
        """A record other than a page's add or delete: writeback, or an inode's life."""
        kind = record[0]
        ids = self._ids
        if kind == ids.get(DIRTY):
            _, name, ino, index = record
            kdev = self._dev_of_bdi(name, ino)
            if kdev is None:
                return
            inode = (kdev, ino)
            count = 1 << self._orders.get(inode, {}).get(index, 0)
            end = self._ends.get(inode)
            if end is not None and index < end < index + count:
                count = end - index  # a folio straddling the end of a file cut short
            self._dirty.setdefault(inode, {})[index] = count
            append((self._key_of(kdev, ino), index, count, _DIRTY))
        elif kind == ids.get(CLEAR):
            _, kdev, ino = record
            self._flush((kdev, ino), append, verified_only=False)
        elif kind == ids.get(SINGLE):
            _, name, ino, _wrote = record
            kdev = self._dev_of_bdi(name, ino)
            if kdev is not None:
                self._flush((kdev, ino), append, verified_only=True)
        elif kind == ids.get(FREE) or kind == ids.get(ALLOC):
            # The number changes hands here, in order with the pages' events: what came
            # before was the old inode's (its key is still cached), what follows the new's.
            _, kdev, ino = record
            inode = (kdev, ino)
            self._lifecycle.add(kdev)
            dev = _tracefs.user_dev(kdev)
            if kind == ids.get(FREE):
                cached = self._keys.get(inode)
                if cached is not None:
                    self._freed.append(cached)
                self._freed.extend(self.sink.store.keys_of(dev, ino))
                self._freed.append((dev, ino, 0))  # its pages seen before its path was known
            for listener in self.sink.inode_listeners:  # the file-handle caches, say
                listener(dev, ino)
            self._keys.pop(inode, None)
            self._orders.pop(inode, None)
            self._dirty.pop(inode, None)
            self._ends.pop(inode, None)
        elif kind == ids.get(TRUNCATE):
            _, kdev, ino = record
            self._truncated((kdev, ino), append)

    def _dev_of_bdi(self, name: bytes, ino: int) -> int | None:
        """The kernel dev of a writeback event's inode, from its bdi name."""
        devs = self._bdis.get(name.rstrip(b"\0"))
        if devs is None:
            # A bdi no scope is known to have: the events are unfiltered because some scope's
            # bdi is unknown, so they may be any device's. Only the scopes without a known
            # bdi can be meant (a FUSE scope, named, must not take the backing disk's events).
            named = {dev for found in self._bdis.values() for dev in found}
            devs = sorted(set(self._devs.values()) - named)
        if len(devs) == 1:
            return _tracefs.kernel_dev(devs[0])
        for dev in devs:  # several candidates: the one that knows this inode
            kdev = _tracefs.kernel_dev(dev)
            if (kdev, ino) in self._dirty or (dev, ino) in self.sink.index:
                return kdev
        return None

    def _undirty(self, inode: tuple[int, int], index: int, count: int) -> None:
        folios = self._dirty[inode]
        for first in [i for i in folios if index <= i < index + count]:
            del folios[first]
        if not folios:
            del self._dirty[inode]

    def _flush(
        self,
        inode: tuple[int, int],
        append: Callable[[Observation], None],
        *,
        verified_only: bool,
    ) -> None:
        folios = self._dirty.get(inode)
        if not folios:
            return
        key = self._key_of(*inode)
        clean = self._clean(inode, folios)
        if clean is None:
            if verified_only:
                return
            clean = list(folios)
        for first in clean:
            append((key, first, folios.pop(first), _FLUSHED))
        if not folios:
            del self._dirty[inode]

    def _clean(self, inode: tuple[int, int], folios: dict[int, int]) -> list[int] | None:
        """Folios that cachestat finds neither dirty nor under writeback (None: no path)."""
        kdev, ino = inode
        dev = _tracefs.user_dev(kdev)
        for path in self.sink.index.paths(dev, ino):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if os.fstat(fd).st_ino != ino:
                    continue
                size = _kernel.PAGE_SIZE
                out = []
                for first, count in folios.items():
                    stat = _kernel.cachestat(fd, first * size, count * size)
                    if not stat.dirty and not stat.writeback:
                        out.append(first)
            except OSError:
                continue
            else:
                return out
            finally:
                os.close(fd)
        return None

    def _learn_dirty(self, observations: Sequence[Observation]) -> None:
        """Dirty pages a scan reported: their writeback is to be reported too.

        This source reports FLUSHED for the pages it saw dirtied; pages that were dirty
        before it started, or whose events were lost, are known from the scans.
        """
        for key, first, count, event in observations:
            if event & _DIRTY:
                inode = (_tracefs.kernel_dev(key[0]), key[1])
                self._dirty.setdefault(inode, {})[first] = count

    def _forget_key(self, dev: int, ino: int) -> None:
        """The inode number may name a new inode now: find its generation again.

        Not on a device whose inodes' lives the kernel reports (ext4): there the key is
        dropped in order with the events, and dropping it now, ahead of the old inode's last
        events, would leave those without a generation.
        """
        kdev = _tracefs.kernel_dev(dev)
        if kdev not in self._lifecycle:
            self._keys.pop((kdev, ino), None)

    def _key_of(self, kdev: int, ino: int, removing: bool = False) -> Key:
        """The key of an event's inode: cached, else found now (by path, or file handle).

        Pages that leave the cache belong to the inode the tasks were told about, the key
        the store holds: looked up now, a path or handle may already lead to a new inode
        that has the number (a file deleted and its number reused before the drain).
        """
        inode = (kdev, ino)
        key = self._keys.get(inode)
        if key is not None:
            return key
        dev = _tracefs.user_dev(kdev)
        if removing:
            held = self.sink.store.keys_of(dev, ino)
            if held:
                key = self._keys[inode] = held[0]
                return key
        gen: int | None = None
        for path in self.sink.index.paths(dev, ino):
            found = generation_at(path, dev, ino)
            if found is not None:
                gen = found[0]
                break
        if gen is None and self.resolve is not None:
            resolved = self.resolve(dev, ino)
            if resolved is not None:
                gen = resolved[1]
        if gen is None:
            return (dev, ino, 0)  # not cached: a path may become known later
        if len(self._keys) >= _KEY_CACHE:
            self._keys.clear()
        key = self._keys[inode] = (dev, ino, gen)
        return key

    # -- status --------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        return self._counts.status(self.name)
