"""Duet's vocabulary: event bits, bitmap operations, file identities and items."""

from __future__ import annotations

import enum
import os

import attrs

__all__ = ["Bmap", "Event", "Item", "Uuid"]


class Event(enum.IntFlag):
    """Page-cache events, with Duet's values.

    ``ADDED``/``REMOVED``/``DIRTY``/``FLUSHED`` are event-based: a task registered for them
    receives every transition, accumulated until it reads (a page added then removed before a
    read comes out once as ``ADDED | REMOVED``). ``EXISTS`` and ``MODIFIED`` are state-based:
    they stand for ``ADDED | REMOVED`` and ``DIRTY | FLUSHED`` respectively, and opposite
    transitions cancel, so the task sees only net changes. ``OVERFLOW`` is delivered, never
    registered for: observations were lost and a rescan of the task's scope is under way.
    """

    ADDED = 0x1
    REMOVED = 0x2
    DIRTY = 0x4
    FLUSHED = 0x8
    MODIFIED = 0x10
    EXISTS = 0x20
    OVERFLOW = 0x40

    def __str__(self) -> str:
        """The bit names, as in ``ADDED|REMOVED`` (``0`` when empty)."""
        return self.name or "0"

    def __format__(self, spec: str) -> str:
        """Format the bit names (``f"{state:<16}"``), not the integer."""
        return format(str(self), spec)


#: The four per-page state bits that items carry.
PAGE_EVENTS = Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED


class Bmap(enum.IntFlag):
    """Operations on a task's per-file *done* bitmap (``duet_bmap``)."""

    SET = 0x1
    RESET = 0x2
    CHECK = 0x4


@attrs.frozen(cache_hash=True)
class Uuid:
    """The identity of a file, as Duet's ``duet_uuid`` without the task id."""

    dev: int
    """Device number (``st_dev``) of the filesystem holding the file."""
    ino: int
    """Inode number."""
    gen: int = 0
    """Inode generation (``FS_IOC_GETVERSION``); 0 where the filesystem has none."""

    @classmethod
    def from_stat(cls, st: os.stat_result, gen: int = 0) -> Uuid:
        """Build the identity of the file that ``st`` describes."""
        return cls(st.st_dev, st.st_ino, gen)

    @classmethod
    def from_key(cls, key: tuple[int, int, int]) -> Uuid:
        """Build a Uuid from the ``(dev, ino, gen)`` tuple used inside the store."""
        return cls(*key)

    @property
    def key(self) -> tuple[int, int, int]:
        """The ``(dev, ino, gen)`` tuple that the store uses as a key."""
        return (self.dev, self.ino, self.gen)


def _check_state(instance: Item, attribute: attrs.Attribute[Event], value: Event) -> None:
    if value == Event.OVERFLOW:
        return
    if not value or int(value) & ~int(PAGE_EVENTS):
        raise ValueError(f"an item's state holds page events only, not {value!r}")


@attrs.frozen
class Item:
    """``count`` consecutive pages of one file, starting at page ``index``, in the same state.

    An ``OVERFLOW`` item carries the uuid of the task's root directory, ``index`` 0 and
    ``count`` 0: observations were lost, and the task's scope is being rescanned.
    """

    uuid: Uuid
    """The file."""
    index: int = attrs.field(validator=attrs.validators.ge(0))
    """Index of the first page (offset in the file divided by the page size)."""
    count: int = attrs.field(validator=attrs.validators.ge(0))
    """Number of consecutive pages."""
    state: Event = attrs.field(converter=Event, validator=_check_state)
    """OR of ADDED/REMOVED/DIRTY/FLUSHED (as merged for the task), or OVERFLOW."""

    @property
    def pages(self) -> range:
        """The page indices this item covers."""
        return range(self.index, self.index + self.count)
