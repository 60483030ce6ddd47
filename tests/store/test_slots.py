"""Tests of aioduet.store._slots: the packed per-slot nibbles and the merge rules on them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioduet import Event
from aioduet.store._slots import NIBBLE, SlotTable, cancel, effective_mask, slot_bits

ADDED, REMOVED, DIRTY, FLUSHED = 0x1, 0x2, 0x4, 0x8

# Every valid registration mask: EXISTS excludes ADDED/REMOVED, MODIFIED excludes DIRTY/FLUSHED.
_EXIST_PARTS = [Event(0), Event.ADDED, Event.REMOVED, Event.ADDED | Event.REMOVED, Event.EXISTS]
_MODIFY_PARTS = [Event(0), Event.DIRTY, Event.FLUSHED, Event.DIRTY | Event.FLUSHED, Event.MODIFIED]
VALID_MASKS = [e | m for e in _EXIST_PARTS for m in _MODIFY_PARTS if e | m]

masks = st.sampled_from(VALID_MASKS)


def oracle_mask(mask: Event) -> tuple[int, int]:
    """What a mask wants and which pairs it cancels, spelled out bit by bit."""
    want = 0
    for bit in (ADDED, REMOVED, DIRTY, FLUSHED):
        if mask & bit:
            want |= bit
    cancels = 0
    if mask & Event.EXISTS:
        want |= ADDED | REMOVED
        cancels |= ADDED
    if mask & Event.MODIFIED:
        want |= DIRTY | FLUSHED
        cancels |= DIRTY
    return want, cancels


def nibbles(value: int, count: int) -> list[int]:
    return [(value >> (4 * slot)) & 0xF for slot in range(count)]


def pack(values: list[int]) -> int:
    return sum(v << (4 * slot) for slot, v in enumerate(values))


# -- effective_mask ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        (Event.EXISTS, (ADDED | REMOVED, ADDED)),
        (Event.MODIFIED, (DIRTY | FLUSHED, DIRTY)),
        (Event.EXISTS | Event.MODIFIED, (0xF, ADDED | DIRTY)),
        (Event.ADDED, (ADDED, 0)),
        (Event.ADDED | Event.REMOVED, (ADDED | REMOVED, 0)),
        (Event.ADDED | Event.REMOVED | Event.DIRTY, (ADDED | REMOVED | DIRTY, 0)),
        (Event.FLUSHED, (FLUSHED, 0)),
        (Event.EXISTS | Event.DIRTY, (ADDED | REMOVED | DIRTY, ADDED)),
        (Event.MODIFIED | Event.REMOVED, (REMOVED | DIRTY | FLUSHED, DIRTY)),
    ],
)
def test_effective_mask_examples(mask: Event, expected: tuple[int, int]) -> None:
    assert effective_mask(mask) == expected


def test_effective_mask_exists_only_is_widened() -> None:
    # Duet's defect: the widened mask of an EXISTS-only task was lost, so it got nothing.
    want, _ = effective_mask(Event.EXISTS)
    assert want & Event.ADDED
    assert want & Event.REMOVED


def test_effective_mask_ignores_overflow() -> None:
    assert effective_mask(Event.OVERFLOW | Event.ADDED) == (ADDED, 0)


@given(masks)
def test_effective_mask_matches_oracle(mask: Event) -> None:
    want, cancels = effective_mask(mask)
    assert (want, cancels) == oracle_mask(mask)
    assert want & ~0xF == 0
    assert cancels & want == cancels


# -- cancel --------------------------------------------------------------------------------


def test_cancel_examples() -> None:
    exists = ADDED
    modified = DIRTY
    assert cancel(ADDED | REMOVED, exists) == 0
    assert cancel(ADDED | REMOVED, modified) == ADDED | REMOVED  # not state-based for that pair
    assert cancel(ADDED | REMOVED | DIRTY, exists) == DIRTY
    assert cancel(DIRTY | FLUSHED | ADDED, modified) == ADDED
    assert cancel(0xF, exists | modified) == 0
    assert cancel(ADDED, exists) == ADDED
    assert cancel(REMOVED, exists) == REMOVED
    # Slot 1 is EXISTS, slot 0 event-based: only slot 1's pair goes.
    value = pack([ADDED | REMOVED, ADDED | REMOVED])
    assert cancel(value, pack([0, exists])) == pack([ADDED | REMOVED, 0])


def test_cancel_does_not_borrow_bits_across_nibbles() -> None:
    # Slot 0 has FLUSHED (bit 3), slot 1 has ADDED (bit 4): no pair, whatever cancel_lo says.
    value = pack([FLUSHED, ADDED])
    lo = pack([ADDED | DIRTY, ADDED | DIRTY])
    assert cancel(value, lo) == value
    value = pack([DIRTY, ADDED, REMOVED])
    assert cancel(value, pack([DIRTY, ADDED, ADDED])) == value


@given(
    st.lists(st.integers(0, 15), min_size=1, max_size=64),
    st.lists(st.sampled_from([0, ADDED, DIRTY, ADDED | DIRTY]), min_size=64, max_size=64),
)
def test_cancel_matches_per_slot_oracle(states: list[int], lows: list[int]) -> None:
    lows = lows[: len(states)]
    expected = []
    for state, low in zip(states, lows, strict=True):
        merged = state
        for lo_bit, pair in ((ADDED, ADDED | REMOVED), (DIRTY, DIRTY | FLUSHED)):
            if low & lo_bit and merged & pair == pair:
                merged &= ~pair
        expected.append(merged)
    assert cancel(pack(states), pack(lows)) == pack(expected)


# -- slot_bits -----------------------------------------------------------------------------


def test_slot_bits_examples() -> None:
    assert slot_bits(0, 64) == 0
    assert slot_bits(pack([1, 0, 8]), 4) == 0b101
    assert slot_bits(FLUSHED << (4 * 63), 64) == 1 << 63
    assert slot_bits(ADDED << (4 * 5), 4) == 0  # beyond max_slots


@given(st.lists(st.integers(0, 15), min_size=1, max_size=64))
def test_slot_bits_matches_oracle(states: list[int]) -> None:
    expected = sum(1 << slot for slot, state in enumerate(states) if state)
    assert slot_bits(pack(states), 64) == expected
    assert slot_bits(pack(states), len(states)) == expected


# -- SlotTable -----------------------------------------------------------------------------


def test_allocate_takes_lowest_free_slot_and_fails_when_full() -> None:
    table = SlotTable(3)
    assert [table.allocate(Event.ADDED) for _ in range(3)] == [0, 1, 2]
    assert table.active == 0b111
    assert table.allocate(Event.ADDED) == -1
    table.release(1)
    assert table.active == 0b101
    assert table.allocate(Event.EXISTS) == 1
    assert table.allocate(Event.EXISTS) == -1


def test_allocate_records_want_and_cancel_bits() -> None:
    table = SlotTable(4)
    assert table.allocate(Event.ADDED | Event.DIRTY) == 0
    assert table.allocate(Event.EXISTS) == 1
    assert table.allocate(Event.MODIFIED) == 2
    assert table.allocate(Event.EXISTS | Event.MODIFIED) == 3
    assert table.want == [ADDED | DIRTY, ADDED | REMOVED, DIRTY | FLUSHED, 0xF]
    assert table.cancel_lo == pack([0, ADDED, DIRTY, ADDED | DIRTY])


def test_release_clears_the_slot() -> None:
    table = SlotTable(3)
    table.allocate(Event.EXISTS)
    table.allocate(Event.MODIFIED)
    table.release(0)
    assert table.want == [0, DIRTY | FLUSHED, 0]
    assert table.cancel_lo == pack([0, DIRTY])
    assert table.spread(ADDED | DIRTY) == pack([0, DIRTY])
    table.release(1)
    assert table.active == 0
    assert table.cancel_lo == 0
    assert table.spread(0xF) == 0


def test_spread_places_wanted_bits_in_each_nibble() -> None:
    table = SlotTable(4)
    table.allocate(Event.ADDED)
    table.allocate(Event.EXISTS)
    table.allocate(Event.DIRTY | Event.FLUSHED)
    assert table.spread(ADDED) == pack([ADDED, ADDED, 0])
    assert table.spread(REMOVED) == pack([0, REMOVED, 0])
    assert table.spread(ADDED | DIRTY) == pack([ADDED, ADDED, DIRTY])
    assert table.spread(FLUSHED) == pack([0, 0, FLUSHED])


def test_spread_cache_follows_allocation_and_release() -> None:
    table = SlotTable(2)
    table.allocate(Event.ADDED)
    assert table.spread(DIRTY) == 0
    assert table.allocate(Event.MODIFIED) == 1
    assert table.spread(DIRTY) == pack([0, DIRTY])  # not the stale cached 0
    table.release(1)
    assert table.spread(DIRTY) == 0
    table.allocate(Event.DIRTY)
    assert table.spread(DIRTY) == pack([0, DIRTY])


@given(st.lists(masks, min_size=1, max_size=64), st.integers(0, 15))
def test_spread_matches_oracle(mask_list: list[Event], event: int) -> None:
    table = SlotTable(64)
    for slot, mask in enumerate(mask_list):
        assert table.allocate(mask) == slot
    expected = pack([event & oracle_mask(mask)[0] for mask in mask_list])
    assert table.spread(event) == expected
    assert table.spread(event) == expected  # memoised answer is the same
    assert table.bits_of(expected) == slot_bits(expected, 64)


@given(st.lists(st.integers(0, 15), min_size=1, max_size=64))
def test_bits_of_matches_slot_bits(states: list[int]) -> None:
    table = SlotTable(64)
    value = pack(states)
    assert table.bits_of(value) == slot_bits(value, 64)
    assert table.bits_of(value) == slot_bits(value, 64)


def test_slot_63_uses_the_top_nibble() -> None:
    table = SlotTable(64)
    for _ in range(64):
        table.allocate(Event.EXISTS)
    assert table.allocate(Event.EXISTS) == -1
    spread = table.spread(ADDED)
    assert nibbles(spread, 64) == [ADDED] * 64
    assert table.bits_of(spread) == (1 << 64) - 1
    assert (table.cancel_lo >> (4 * 63)) & NIBBLE == ADDED
    table.release(63)
    assert table.spread(ADDED) >> (4 * 63) == 0
