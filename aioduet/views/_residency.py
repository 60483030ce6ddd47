"""What a state-based task has said about each file, kept as per-page maps.

The views (``top``, ``record``) register one task for ``EXISTS | MODIFIED`` and apply its
items here. State-based items carry net changes, so applying them in order keeps a true
picture: a page is cached from its ``ADDED`` item until its ``REMOVED`` one, dirty from
``DIRTY`` until ``FLUSHED`` (or until it leaves the cache). An ``OVERFLOW`` item empties every
map: observations were lost, and the task is told its scope's current state again, as at
registration (the files and their activity counts stay).

Each file also counts the pages its items moved (added, removed, dirtied, flushed), which the
views turn into rates and per-interval activity.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

from .._model import Event, Item, Uuid

__all__ = ["Activity", "FileResidency", "ResidencyView"]

_ONE = b"\x01"


@attrs.frozen
class Activity:
    """Pages that items moved in one file (or in all files) over some span of time."""

    added: int = 0
    """Pages that came into the page cache."""
    removed: int = 0
    """Pages that left it (evicted, truncated, deleted)."""
    dirtied: int = 0
    """Pages that became dirty."""
    flushed: int = 0
    """Dirty pages written back."""

    def __add__(self, other: Activity) -> Activity:
        """The sum, field by field."""
        return Activity(
            self.added + other.added,
            self.removed + other.removed,
            self.dirtied + other.dirtied,
            self.flushed + other.flushed,
        )

    def __sub__(self, other: Activity) -> Activity:
        """The difference, field by field (what happened since ``other`` was taken)."""
        return Activity(
            self.added - other.added,
            self.removed - other.removed,
            self.dirtied - other.dirtied,
            self.flushed - other.flushed,
        )

    def as_list(self) -> list[int]:
        """``[added, removed, dirtied, flushed]``."""
        return [self.added, self.removed, self.dirtied, self.flushed]


@attrs.define(eq=False)
class FileResidency:
    """One file's cached and dirty pages, as the task's items describe them."""

    uuid: Uuid
    cached_map: bytearray = attrs.field(factory=bytearray)
    """One byte per page, 1 if cached."""
    dirty_map: bytearray = attrs.field(factory=bytearray)
    """One byte per page, 1 if dirty."""
    activity: Activity = attrs.field(factory=Activity)
    """Pages moved since the view began."""

    @property
    def cached(self) -> int:
        """Cached pages."""
        return self.cached_map.count(1)

    @property
    def dirty(self) -> int:
        """Dirty pages."""
        return self.dirty_map.count(1)

    def cached_in(self, first: int, count: int) -> int:
        """Cached pages among ``count`` pages from ``first``."""
        return self.cached_map[first : first + count].count(1)


def _set(vector: bytearray, first: int, count: int, value: int) -> int:
    """Set ``count`` pages from ``first`` to ``value``; returns how many changed."""
    end = first + count
    if len(vector) < end:
        if not value:
            count = max(0, len(vector) - first)
            end = first + count
        else:
            vector.extend(bytes(end - len(vector)))
    if count <= 0:
        return 0
    before = vector[first:end].count(1)
    vector[first:end] = (_ONE if value else b"\x00") * count
    return count - before if value else before


@attrs.define(eq=False)
class ResidencyView:
    """Per-file page maps built from a state-based task's items (``EXISTS | MODIFIED``).

    Files are keyed by ``(dev, ino)``: an item with a new inode generation for a known key
    replaces the file (the inode was reused).
    """

    files: dict[tuple[int, int], FileResidency] = attrs.field(factory=dict)
    """Every file an item mentioned, by ``(dev, ino)``."""
    overflows: int = 0
    """``OVERFLOW`` items seen (observations were lost; the rescan repairs the maps)."""
    items: int = 0
    """Items applied, overflows included."""
    cached: int = 0
    """Cached pages over all files (kept as items come, not summed when asked)."""
    dirty: int = 0
    """Dirty pages over all files."""

    def apply(self, item: Item) -> FileResidency | None:
        """Apply one item; returns the file it changed (None for ``OVERFLOW``)."""
        self.items += 1
        if item.state == Event.OVERFLOW:
            self.overflows += 1
            for emptied in self.files.values():
                emptied.cached_map.clear()
                emptied.dirty_map.clear()
            self.cached = self.dirty = 0
            return None
        uuid = item.uuid
        key = (uuid.dev, uuid.ino)
        state = self.files.get(key)
        if state is None or state.uuid.gen != uuid.gen:
            if state is not None:  # the inode was reused: the old file's pages are gone
                self.cached -= state.cached
                self.dirty -= state.dirty
            state = self.files[key] = FileResidency(uuid)
        first, count = item.index, item.count
        added = removed = dirtied = flushed = 0
        if item.state & Event.ADDED:
            added = _set(state.cached_map, first, count, 1)
        if item.state & Event.DIRTY:
            added += _set(state.cached_map, first, count, 1)
            dirtied = _set(state.dirty_map, first, count, 1)
        if item.state & Event.FLUSHED:
            flushed = _set(state.dirty_map, first, count, 0)
        cleaned = 0
        if item.state & Event.REMOVED:
            removed = _set(state.cached_map, first, count, 0)
            cleaned = _set(state.dirty_map, first, count, 0)
        state.activity += Activity(added, removed, dirtied, flushed)
        self.cached += added - removed
        self.dirty += dirtied - flushed - cleaned
        return state

    def apply_all(self, items: Iterable[Item]) -> set[tuple[int, int]]:
        """Apply items in order; returns the keys of the files they changed."""
        changed: set[tuple[int, int]] = set()
        for item in items:
            if item.state == Event.OVERFLOW:
                changed.update(self.files)  # emptied
            state = self.apply(item)
            if state is not None:
                changed.add((state.uuid.dev, state.uuid.ino))
        return changed

    def __iter__(self) -> Iterator[FileResidency]:
        """The files, in no particular order."""
        return iter(self.files.values())
