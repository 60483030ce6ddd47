"""Task slots and the merge rules, as bit arithmetic on packed per-page entries.

Every pending page has one shared entry: a Python ``int`` in which task slot ``s`` owns the
four bits ``[4s, 4s + 4)`` (its *nibble*). A nibble holds the page's accumulated
``ADDED``/``REMOVED``/``DIRTY``/``FLUSHED`` bits for that task, with the same values as
:class:`aioduet.Event`. Merging an observation into the entry for all interested tasks at
once is one OR with a *spread* (the event's bits placed in every interested nibble), and
Duet's cancel rule for state-based tasks is three more integer operations, whatever the
number of tasks.
"""

from __future__ import annotations

import attrs

from .._model import PAGE_EVENTS, Event

__all__ = ["NIBBLE", "SlotTable", "cancel", "effective_mask", "nibbles_of", "slot_bits"]

NIBBLE = 0xF


def effective_mask(mask: Event) -> tuple[int, int]:
    """The page events a registration mask wants, and the low bits of the pairs it cancels.

    ``EXISTS`` stands for ``ADDED|REMOVED`` and cancels that pair; ``MODIFIED`` stands for
    ``DIRTY|FLUSHED`` and cancels it. (Duet once forgot to store the widened mask, so an
    ``EXISTS``-only task received nothing.)
    """
    want = int(mask & PAGE_EVENTS)
    cancels = 0
    if mask & Event.EXISTS:
        want |= Event.ADDED | Event.REMOVED
        cancels |= Event.ADDED
    if mask & Event.MODIFIED:
        want |= Event.DIRTY | Event.FLUSHED
        cancels |= Event.DIRTY
    return want, cancels


def cancel(value: int, cancel_lo: int) -> int:
    """Apply the state-based cancel rule to a packed entry.

    ``cancel_lo`` has, for every slot whose task is state-based, the low bit of each pair it
    cancels (``ADDED`` for EXISTS, ``DIRTY`` for MODIFIED) at that slot's nibble. A pair with
    both bits set is cleared: added-then-removed is no net change.
    """
    both = value & (value >> 1) & cancel_lo
    if both:
        value &= ~(both * 3)  # both | both << 1: the pair's two bits
    return value


def nibbles_of(slots: int) -> int:
    """The packed mask with a full nibble for every slot bit set in ``slots``."""
    mask = 0
    slot = 0
    while slots:
        if slots & 1:
            mask |= NIBBLE << (4 * slot)
        slots >>= 1
        slot += 1
    return mask


def slot_bits(spread: int, max_slots: int) -> int:
    """One bit per slot that has any bit set in the packed value ``spread``."""
    bits = 0
    for slot in range(max_slots):
        if (spread >> (4 * slot)) & NIBBLE:
            bits |= 1 << slot
    return bits


@attrs.define(eq=False)
class SlotTable:
    """The registered slots and the masks derived from them, recomputed on (de)registration."""

    max_slots: int
    want: list[int] = attrs.field(init=False)
    active: int = 0
    """One bit per slot in use."""
    cancel_lo: int = 0
    """Packed low bits of the cancelling pairs of every state-based slot."""
    _spreads: dict[int, int] = attrs.field(init=False, factory=dict)
    _bits: dict[int, int] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.want = [0] * self.max_slots

    def allocate(self, mask: Event) -> int:
        """Take the lowest free slot for a task registered with ``mask``; ``-1`` if none is free."""
        for slot in range(self.max_slots):
            if not self.active & (1 << slot):
                want, cancels = effective_mask(mask)
                self.want[slot] = want
                self.active |= 1 << slot
                self.cancel_lo |= cancels << (4 * slot)
                self._spreads.clear()
                return slot
        return -1

    def release(self, slot: int) -> None:
        """Free ``slot``."""
        self.active &= ~(1 << slot)
        self.want[slot] = 0
        self.cancel_lo &= ~(NIBBLE << (4 * slot))
        self._spreads.clear()

    def spread(self, event: int) -> int:
        """``event``'s bits placed in the nibble of every slot that wants them."""
        try:
            return self._spreads[event]
        except KeyError:
            value = 0
            for slot in range(self.max_slots):
                value |= (event & self.want[slot]) << (4 * slot)
            self._spreads[event] = value
            return value

    def bits_of(self, spread: int) -> int:
        """One bit per slot with a bit in ``spread`` (memoised :func:`slot_bits`)."""
        try:
            return self._bits[spread]
        except KeyError:
            bits = self._bits[spread] = slot_bits(spread, self.max_slots)
            return bits
