"""The event store: one shared entry per pending page, routed to tasks by slot.

This is the engine of aioduet, so it is written for speed rather than brevity: everything
runs on the event loop (no locks), files are keyed by ``(dev, ino, gen)`` tuples, and the
per-page entry is a packed ``int`` (see :mod:`._slots`).

Layout::

    Store._files      {key: FileEntry}            one per file relevant to some task, or
                                                  holding pending pages or done bits
      FileEntry.pages {page index: packed int}    only pages pending for some task
    Store._queues     [slot] -> {key: FileEntry}  the files holding something for that slot
    Store._outside    {key: slots}                files relevant to no task (bounded LRU)
    Store._gone       {key: None}                 files retired lately (bounded)

The per-slot queue plays the part of Duet's per-task bitmap of hash buckets, with one bucket
per file: a task's drain visits only the files that hold something for it. Memory is bounded
by the number of distinct pending pages plus one small entry per file in some task's scope;
a stalled task never makes it grow with the number of observations, and files outside every
scope or gone cost bounded memory (bench/soak.py).

The store knows nothing of paths, sources or tasks. Relevance is decided once per
(slot, file) by a callback, and new pending state is announced through another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import attrs

from .._model import Event
from ._slots import NIBBLE, SlotTable, cancel, nibbles_of

__all__ = ["FileEntry", "Key", "Observation", "Run", "Store", "StoreStatistics"]

Key = tuple[int, int, int]
"""A file's ``(dev, ino, gen)``."""
Observation = tuple[Key, int, int, int]
"""``(key, first page, page count, event bits)`` as sources hand them to the store."""
Run = tuple[Key, int, int, int]
"""``(key, first page, page count, state bits)`` as the store hands them to a task."""

RelevanceFn = Callable[[Key, int], "bool | None"]
"""Decides whether a file is relevant to a slot; ``None`` when it cannot tell yet."""
NotifyFn = Callable[[int], None]
"""Called with one bit per slot that received pending state."""

_OPPOSITE = {int(Event.ADDED): int(Event.REMOVED), int(Event.DIRTY): int(Event.FLUSHED)}
_REMOVED = int(Event.REMOVED)
_ALIVE = int(Event.ADDED | Event.DIRTY)
"""Events only a file that still exists can have (pages read into the cache or written)."""
_DIRTY_NIBBLES = int("4" * 64, 16)
"""``DIRTY`` in the nibble of each of the 64 slots a store may have."""

OUTSIDE_MEMORY = 16384
"""How many files relevant to no task the store remembers as such (least recently seen go
first): a busy filesystem's other files cost a relevance decision each, not an entry each."""
BYTES_PER_OUTSIDE = 200
"""Estimated bytes per file remembered as relevant to no task."""

GONE_MEMORY = 4096
"""How many retired keys the store remembers, so that a late observation of a gone file
makes no entry that would stay for good (bench/soak.py)."""

#: Estimated bytes per pending page and per file entry, as measured by
#: ``bench/store_ingest.py`` (CPython 3.11, 64-bit); used by :meth:`Store.statistics`.
BYTES_PER_PAGE = 77
BYTES_PER_FILE = 780


@attrs.define(eq=False, slots=True)
class FileEntry:
    """Everything the store remembers about one file."""

    key: Key
    pages: dict[int, int] = attrs.field(factory=dict)
    """Pending pages: page index -> packed per-slot state."""
    seen: int = 0
    """Slots whose relevance is decided."""
    relevant: int = 0
    """Slots to which the file is relevant."""
    done: int = 0
    """Slots that marked the file done (``Bmap.SET``)."""
    route: int = 0
    """Packed nibble mask of the slots that take this file's events (relevant, not done)."""
    queued: int = 0
    """Slots whose queue holds this entry."""
    retired: bool = False
    """The file is gone: drop the entry once its pending pages are drained."""

    def reroute(self) -> None:
        self.route = nibbles_of(self.relevant & ~self.done)


@attrs.frozen
class StoreStatistics:
    """Size of the store."""

    files: int
    """File entries (pending or remembered for relevance and done bits)."""
    pending_files: int
    """Files holding a pending page for at least one task."""
    pending_pages: int
    """Distinct pending pages (one shared entry each, whatever the number of tasks)."""
    memory_bytes: int
    """Estimated memory held by those entries."""


def _no_notify(slots: int) -> None:
    return None


def _unknown(key: Key, slot: int) -> bool | None:
    return None


@attrs.define(eq=False)
class Store:
    """Merges observations into per-page entries and drains them per task slot.

    Args:
        max_slots: the most tasks that can be registered at once.
        relevance: ``relevance(key, slot)`` decides once whether a file belongs to the slot's
            scope (``None``: cannot tell yet, ask again next time).
        notify: called after each ingest with one bit per slot that received pending state.
    """

    max_slots: int = attrs.field(validator=attrs.validators.in_(range(1, 65)))
    relevance: RelevanceFn = _unknown
    notify: NotifyFn = _no_notify
    _slots: SlotTable = attrs.field(init=False)
    _files: dict[Key, FileEntry] = attrs.field(init=False, factory=dict)
    _queues: list[dict[Key, FileEntry]] = attrs.field(init=False)
    _latest: dict[tuple[int, int], Key] = attrs.field(init=False, factory=dict)
    _gone: dict[Key, None] = attrs.field(init=False, factory=dict)
    """Keys retired lately, oldest first (at most GONE_MEMORY)."""
    _outside: dict[Key, int] = attrs.field(init=False, factory=dict)
    """Files relevant to none of the slots that decided (the value), least recently seen
    first (at most OUTSIDE_MEMORY). They hold no entry; ``_latest`` may name them."""
    _overflow: int = attrs.field(init=False, default=0)
    observations: int = attrs.field(init=False, default=0)
    """Observations ingested since the store was made."""

    def __attrs_post_init__(self) -> None:
        self._slots = SlotTable(self.max_slots)
        self._queues = [{} for _ in range(self.max_slots)]

    # -- slots ---------------------------------------------------------------------------

    @property
    def active_slots(self) -> int:
        """One bit per slot in use."""
        return self._slots.active

    def add_slot(self, mask: Event) -> int:
        """Register a task's mask; returns its slot, or ``-1`` when all slots are taken."""
        return self._slots.allocate(mask)

    def remove_slot(self, slot: int) -> None:
        """Forget a slot: its pending state, relevance and done bits.

        Entries that then matter to no remaining slot (nothing pending, relevance decided and
        done bit set for none of them) are dropped: once every task has gone, the store is
        empty, and a daemon's departed clients leave no memory behind.
        """
        bit = 1 << slot
        for entry in list(self._queues[slot].values()):
            self._clear_slot(entry, slot)  # also drops retired entries left empty
        remaining = self._slots.active & ~bit
        unused = []
        for entry in self._files.values():
            if (entry.seen | entry.done | entry.queued) & bit:
                entry.seen &= ~bit
                entry.relevant &= ~bit
                entry.done &= ~bit
                entry.queued &= ~bit
                entry.reroute()
            if not entry.pages and not entry.queued and not (entry.seen | entry.done) & remaining:
                unused.append(entry.key)
        for key in unused:
            self.forget(key)
        if not remaining:
            self._gone.clear()
            self._latest.clear()  # no entry is left: what it names is parked at most
            self._outside.clear()
        else:
            outside = self._outside  # a task reusing the slot must decide for itself
            for key in outside:
                outside[key] &= ~bit
        self._overflow &= ~bit
        self._slots.release(slot)

    def reset_slot(self, slot: int) -> None:
        """Start a slot afresh: its pending pages go, and every file's relevance to it is
        decided again (a registration scan is about to tell it its scope's current state).
        Its done bits and a due OVERFLOW stay."""
        bit = 1 << slot
        outside = self._outside
        for key in outside:
            outside[key] &= ~bit
        for entry in list(self._queues[slot].values()):
            self._clear_slot(entry, slot)
        for entry in self._files.values():
            if entry.seen & bit:
                entry.seen &= ~bit
                entry.relevant &= ~bit
                entry.reroute()

    # -- ingest --------------------------------------------------------------------------

    def ingest(self, observations: Iterable[Observation], *, but: int | None = None) -> None:
        """Merge observations into the store, for every task they are relevant to.

        ``but`` is a slot left out (a registration scan tells its task the current state of
        the files instead: the changes from what others knew are not changes to it).
        """
        self._ingest(observations, -1 if but is None else ~(NIBBLE << (4 * but)))

    def ingest_for(self, slot: int, observations: Iterable[Observation]) -> None:
        """Merge observations for one slot only (a registration scan's initial state)."""
        self._ingest(observations, NIBBLE << (4 * slot))

    def _ingest(  # noqa: PLR0912, PLR0915 - the hot loop is inlined (bench/store_ingest.py)
        self, observations: Iterable[Observation], only: int, *, routed: bool = True
    ) -> None:
        files = self._files
        outside = self._outside  # emptied and filled meanwhile, never replaced
        slots = self._slots
        active = slots.active
        if not active:
            return  # no task: nothing to route, nothing to remember
        cancel_lo = slots.cancel_lo
        # For a slot that keeps the dirty state (MODIFIED), a page that leaves the cache is
        # not dirty any more: a REMOVED drops the DIRTY pending before it. Otherwise pending
        # ADDED, DIRTY, REMOVED cancelled to DIRTY alone, a page gone from the cache told as
        # cached and dirty (bench/soak.py). It is not a FLUSHED: that would cancel a DIRTY
        # that comes after it (removed, then read and written again).
        spread_of = slots.spread
        bits_of = slots.bits_of
        woken = 0
        count = 0
        for key, index, length, event in observations:
            count += 1
            entry = files.get(key)
            new = entry is None
            if entry is None:
                if outside and outside.get(key) == active:
                    del outside[key]
                    outside[key] = active  # now the most recently seen
                    continue
                entry = self._entry(key, event)
            if entry.seen != active:
                self._decide(entry, active)
            spread = spread_of(event) & (entry.route if routed else -1) & only
            if not spread:
                if new:
                    self._unrouted(entry, active)
                continue
            pages = entry.pages
            # REMOVED (0x2) moved onto DIRTY (0x4), for the slots that keep the dirty state.
            keep = ~((spread << 1) & cancel_lo & _DIRTY_NIBBLES) if event & _REMOVED else -1
            if length == 1:  # one page: the common case for per-folio event sources
                value = (pages.get(index, 0) & keep) | spread
                if value & (value >> 1) & cancel_lo:  # some cancelling pair has both bits
                    value = cancel(value, cancel_lo)
                if value:
                    pages[index] = value
                elif index in pages:
                    del pages[index]
            else:
                get = pages.get
                for page in range(index, index + length):
                    value = (get(page, 0) & keep) | spread
                    if value & (value >> 1) & cancel_lo:
                        value = cancel(value, cancel_lo)
                    if value:
                        pages[page] = value
                    elif page in pages:
                        del pages[page]
            touched = bits_of(spread)
            woken |= touched
            fresh = touched & ~entry.queued
            if fresh:
                entry.queued |= fresh
                for slot in range(self.max_slots):
                    if fresh & (1 << slot):
                        self._queues[slot][key] = entry
        self.observations += count
        if woken:
            self.notify(woken)

    def _unrouted(self, entry: FileEntry, active: int) -> None:
        """A new entry took nothing: keep no entry unless it holds something."""
        if entry.retired or not entry.seen:
            # No task could decide about it (a file the exact set knows no path of, a file
            # its scan has not reached), or it is gone: nothing to remember, and a busy
            # device's other files would pile up (bench/soak.py).
            self.forget(entry.key)
        elif entry.seen == active and not entry.relevant | entry.done:
            self._park(entry, active)

    def _park(self, entry: FileEntry, active: int) -> None:
        """Keep only the key of a file relevant to none of the ``active`` slots."""
        key = entry.key
        self.forget(key)
        self._latest.setdefault((key[0], key[1]), key)
        outside = self._outside
        outside[key] = active
        if len(outside) > OUTSIDE_MEMORY:
            self._unpark(next(iter(outside)))

    def _unpark(self, key: Key) -> None:
        """Forget that the file is relevant to no slot (it holds no entry)."""
        del self._outside[key]
        if self._latest.get((key[0], key[1])) == key:
            del self._latest[key[0], key[1]]

    def _entry(self, key: Key, event: int = 0) -> FileEntry:
        entry = self._files[key] = FileEntry(key)
        if self._outside:
            # Decided before as relevant to none of these slots: the others are asked.
            entry.seen = self._outside.pop(key, 0)
        if key in self._gone:
            if not event & _ALIVE:
                # A late observation of a file that is gone (pages leaving the cache, drained
                # after it was retired): its pages still reach the tasks, then it goes.
                entry.retired = True
                return entry
            del self._gone[key]  # pages added or written: back in a scope (moved back)
        inode = key[0], key[1]
        before = self._latest.get(inode)
        self._latest[inode] = key
        if before is not None and before[2] != key[2] and before[2] and key[2]:
            # The inode number was freed and given to a new file: the old one is gone. A
            # generation of 0 is a source's "not known yet", which says nothing of that.
            self.retire(before)
        return entry

    def keys_of(self, dev: int, ino: int) -> list[Key]:
        """The key under which the store knows inode ``(dev, ino)`` (empty if unknown)."""
        key = self._latest.get((dev, ino))
        return [] if key is None else [key]

    def _decide(self, entry: FileEntry, active: int) -> None:
        undecided = active & ~entry.seen
        entry.seen &= active
        entry.relevant &= active
        for slot in range(self.max_slots):
            bit = 1 << slot
            if undecided & bit:
                answer = self.relevance(entry.key, slot)
                if answer is not None:
                    entry.seen |= bit
                    if answer:
                        entry.relevant |= bit
        # A slot that could not decide leaves entry.seen != active: it is asked again next time.
        entry.reroute()

    def relocate(self, key: Key, present: Sequence[tuple[int, int, int]]) -> None:
        """The file's path changed: decide its relevance again, now, and tell the slots.

        ``present`` is the file's current state as ``(first page, count, ADDED or DIRTY)``
        runs. Slots whose scope the file left get the opposite (REMOVED, FLUSHED): to them its
        pages are gone. Slots whose scope it entered get ``present`` (ADDED, DIRTY).
        """
        if key in self._outside:
            self._unpark(key)
        entry = self._files.get(key)
        if entry is None:
            return  # no slot was told anything of it; relevance is decided on next sight
        before = entry.relevant & entry.seen & ~entry.done
        entry.seen = entry.relevant = 0
        self._decide(entry, self._slots.active)
        after = entry.relevant & ~entry.done
        left, joined = before & ~after, after & ~before
        if left:
            gone = [(key, first, count, _OPPOSITE[event]) for first, count, event in present]
            self._ingest(gone, nibbles_of(left), routed=False)
        if joined:
            came = [(key, first, count, event) for first, count, event in present]
            self._ingest(came, nibbles_of(joined), routed=False)

    def forget_relevance(self, key: Key) -> None:
        """The file's path changed (a rename): decide its relevance again on next sight."""
        if key in self._outside:
            self._unpark(key)
        entry = self._files.get(key)
        if entry is not None:
            entry.seen = 0
            entry.relevant = 0
            entry.reroute()

    def retire(self, key: Key) -> None:
        """The file is gone: drop its entry now, or once its pending pages are drained.

        The key is remembered for a while: an observation of it that comes later makes an
        entry that goes as soon as it holds nothing (its pages are drained or cancelled).
        """
        gone = self._gone
        gone.pop(key, None)
        gone[key] = None
        if len(gone) > GONE_MEMORY:
            del gone[next(iter(gone))]
        entry = self._files.get(key)
        if entry is None:
            if key in self._outside:
                self._unpark(key)
            return
        if entry.pages:
            entry.retired = True
        else:
            self.forget(key)

    def forget(self, key: Key) -> None:
        """The file is gone: drop its entry and pending pages."""
        entry = self._files.pop(key, None)
        self._outside.pop(key, None)
        if self._latest.get((key[0], key[1])) == key:
            del self._latest[key[0], key[1]]
        if entry is not None:
            for slot in range(self.max_slots):
                if entry.queued & (1 << slot):
                    self._queues[slot].pop(key, None)

    # -- per-slot answers ----------------------------------------------------------------

    def relevant(self, slot: int, key: Key) -> bool | None:
        """Whether the file is relevant to the slot (decided once, then remembered).

        A file the store holds nothing about is asked about without being remembered, so
        questions about arbitrary files cost no memory.
        """
        bit = 1 << slot
        active = self._slots.active
        entry = self._files.get(key)
        if entry is None:
            decided = self._outside.get(key)
            if decided is None:
                return self.relevance(key, slot)
            if decided & bit:
                return False  # decided: relevant to no task that decided
            entry = self._entry(key)  # the others' decisions are kept; this slot decides
            self._decide(entry, active)
            if entry.seen == active and not entry.relevant:
                self._park(entry, active)
                return False
        elif entry.seen != active:
            self._decide(entry, active)
        if not entry.seen & bit:
            return None
        return bool(entry.relevant & bit)

    def set_done(self, slot: int, key: Key, done: bool) -> None:
        """Mark the file done (no more pending state for the slot) or not done."""
        entry = self._files.get(key)
        if entry is None:
            entry = self._entry(key)
        bit = 1 << slot
        if done:
            entry.done |= bit
            self._clear_slot(entry, slot)  # drops a retired entry left empty
        else:
            entry.done &= ~bit
            if entry.retired and not entry.pages:
                self.forget(key)
                return
        entry.reroute()

    def is_done(self, slot: int, key: Key) -> bool:
        """Whether the slot marked the file done."""
        entry = self._files.get(key)
        return entry is not None and bool(entry.done & (1 << slot))

    def signal_overflow(self, slots: int) -> None:
        """Observations were lost for these slots: each will get one OVERFLOW first."""
        slots &= self._slots.active
        if slots:
            self._overflow |= slots
            self.notify(slots)

    def take_overflow(self, slot: int) -> bool:
        """Whether an OVERFLOW is due for the slot; clears it."""
        bit = 1 << slot
        due = bool(self._overflow & bit)
        self._overflow &= ~bit
        return due

    def has_pending(self, slot: int) -> bool:
        """Whether a drain for the slot may return something (cheap; may be a false positive)."""
        return bool(self._queues[slot]) or bool(self._overflow & (1 << slot))

    def drain(self, slot: int, max_runs: int) -> list[Run]:
        """Take the slot's pending pages as coalesced runs, file by file.

        Whole files are drained, so the result can exceed ``max_runs`` by the runs of the
        last file; the caller keeps the excess. Files are visited in the order they first
        got pending state for the slot; pages within a file in ascending order.
        """
        queue = self._queues[slot]
        bit = 1 << slot
        shift = 4 * slot
        clear = ~(NIBBLE << shift)
        runs: list[Run] = []
        while queue and len(runs) < max_runs:
            key = next(iter(queue))
            entry = queue.pop(key)
            entry.queued &= ~bit
            pages = entry.pages
            start = end = -1
            state = 0
            for index in sorted(pages):
                packed = pages[index]
                value = packed >> shift & NIBBLE
                if not value:
                    continue
                rest = packed & clear
                if rest:
                    pages[index] = rest
                else:
                    del pages[index]
                if index == end and value == state:
                    end += 1
                    continue
                if end > start:
                    runs.append((key, start, end - start, state))
                start, end, state = index, index + 1, value
            if end > start:
                runs.append((key, start, end - start, state))
            if not pages:
                pages.clear()  # an emptied dict keeps its table until cleared
                if entry.retired:
                    self.forget(key)
        return runs

    def _clear_slot(self, entry: FileEntry, slot: int) -> None:
        clear = ~(NIBBLE << (4 * slot))
        pages = entry.pages
        for index in list(pages):
            rest = pages[index] & clear
            if rest:
                pages[index] = rest
            else:
                del pages[index]
        entry.queued &= ~(1 << slot)
        self._queues[slot].pop(entry.key, None)
        if not pages:
            pages.clear()
            if entry.retired:
                self.forget(entry.key)

    # -- statistics ----------------------------------------------------------------------

    def pending_pages(self, slot: int) -> int:
        """Pages pending for the slot (walks the slot's queue)."""
        shift = 4 * slot
        return sum(
            1
            for entry in self._queues[slot].values()
            for value in entry.pages.values()
            if value >> shift & NIBBLE
        )

    def pending_files(self, slot: int) -> int:
        """Files holding pending pages for the slot (may count files whose pages cancelled)."""
        return len(self._queues[slot])

    def statistics(self) -> StoreStatistics:
        """Sizes of the store, and its estimated memory."""
        pending_files = 0
        pending_pages = 0
        for entry in self._files.values():
            if entry.pages:
                pending_files += 1
                pending_pages += len(entry.pages)
        files = len(self._files)
        return StoreStatistics(
            files=files,
            pending_files=pending_files,
            pending_pages=pending_pages,
            memory_bytes=files * BYTES_PER_FILE
            + pending_pages * BYTES_PER_PAGE
            + len(self._outside) * BYTES_PER_OUTSIDE,
        )
