"""Tests of aioduet.store._table: merging, cancelling, routing and draining pending pages."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from aioduet import Event
from aioduet.store import Key, Observation, Run, Store
from aioduet.store._table import BYTES_PER_FILE, BYTES_PER_PAGE, GONE_MEMORY, OUTSIDE_MEMORY

ADDED, REMOVED, DIRTY, FLUSHED = 0x1, 0x2, 0x4, 0x8

A: Key = (1, 10, 0)
B: Key = (1, 11, 0)
C: Key = (2, 10, 0)


def relevant_to_all(key: Key, slot: int) -> bool:
    return True


def pages_of(runs: list[Run]) -> dict[tuple[Key, int], int]:
    out: dict[tuple[Key, int], int] = {}
    for key, first, count, state in runs:
        for page in range(first, first + count):
            assert (key, page) not in out
            out[key, page] = state
    return out


# -- the model -----------------------------------------------------------------------------

_EXIST_PARTS = [Event(0), Event.ADDED, Event.REMOVED, Event.ADDED | Event.REMOVED, Event.EXISTS]
_MODIFY_PARTS = [Event(0), Event.DIRTY, Event.FLUSHED, Event.DIRTY | Event.FLUSHED, Event.MODIFIED]
VALID_MASKS = [e | m for e in _EXIST_PARTS for m in _MODIFY_PARTS if e | m]
KEYS: list[Key] = [(1, 10, 0), (1, 11, 0), (1, 11, 1), (2, 10, 0)]
EVENTS = [ADDED, REMOVED, DIRTY, FLUSHED, ADDED | DIRTY]
MAX_SLOTS = 6


def model_mask(mask: Event) -> tuple[int, list[int]]:
    """The bits a slot keeps and the pairs that cancel, from the rules as documented."""
    want = int(mask) & 0xF
    pairs = []
    if mask & Event.EXISTS:
        want |= ADDED | REMOVED
        pairs.append(ADDED | REMOVED)
    if mask & Event.MODIFIED:
        want |= DIRTY | FLUSHED
        pairs.append(DIRTY | FLUSHED)
    return want, pairs


# Any valid mask, with the state-based ones (which cancel) drawn more often.
mask_choices = st.sampled_from([Event.EXISTS, Event.MODIFIED, Event.EXISTS | Event.MODIFIED]) | (
    st.sampled_from(VALID_MASKS)
)

# Pages below 64 and runs of 1-8 pages, biased to a few low pages and single pages so that
# observations often overlap (cancelling, coalescing) and take the single-page fast path.
observations = st.tuples(
    st.sampled_from(KEYS),
    st.integers(0, 3) | st.integers(0, 56),
    st.just(1) | st.integers(1, 8),
    st.sampled_from(EVENTS),
)


class StoreMachine(RuleBasedStateMachine):
    """The store against a dict (slot, key) -> {page: state} that applies the rules per page."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[tuple[int, Key], dict[int, int]] = {}
        self.masks: dict[int, tuple[int, list[int]]] = {}
        self.done: set[tuple[int, Key]] = set()
        self.answers: dict[tuple[Key, int], bool | None] = {}
        self.calls: Counter[tuple[Key, int]] = Counter()
        self.notified: list[int] = []
        self.store = Store(MAX_SLOTS, relevance=self._relevance, notify=self.notified.append)

    def _relevance(self, key: Key, slot: int) -> bool | None:
        assert slot in self.masks
        self.calls[key, slot] += 1
        return self.answers[key, slot]

    @initialize(
        masks=st.lists(mask_choices, min_size=1, max_size=4),
        # Files are relevant unless listed here as irrelevant (False) or undecidable (None).
        # (Later entries for the same (key, slot) win.)
        exceptions=st.lists(
            st.tuples(
                st.sampled_from(KEYS), st.integers(0, MAX_SLOTS - 1), st.sampled_from([False, None])
            ),
            max_size=len(KEYS) * MAX_SLOTS // 3,
        ),
    )
    def setup(self, masks: list[Event], exceptions: list[tuple[Key, int, bool | None]]) -> None:
        self.answers = {(key, slot): True for key in KEYS for slot in range(MAX_SLOTS)}
        for key, slot, answer in exceptions:
            self.answers[key, slot] = answer
        for expected, mask in enumerate(masks):
            assert self.store.add_slot(mask) == expected
            self.masks[expected] = model_mask(mask)

    # -- helpers -----------------------------------------------------------------------

    def _apply(self, slots: list[int], obs: list[Observation]) -> None:
        woken = 0
        for key, first, count, event in obs:
            for slot in slots:
                if self.answers[key, slot] is not True or (slot, key) in self.done:
                    continue
                want, pairs = self.masks[slot]
                bits = event & want
                if not bits:
                    continue
                woken |= 1 << slot
                pages = self.model.setdefault((slot, key), {})
                for page in range(first, first + count):
                    state = pages.get(page, 0)
                    if bits & REMOVED and DIRTY | FLUSHED in pairs:
                        state &= ~DIRTY  # a page gone from the cache is not dirty any more
                    state |= bits
                    for pair in pairs:
                        if state & pair == pair:
                            state &= ~pair
                    if state:
                        pages[page] = state
                    else:
                        pages.pop(page, None)
        self.notified.clear()
        self.expected_notify = [woken] if woken else []

    def _slot(self, pick: int) -> int:
        slots = sorted(self.masks)
        return slots[pick % len(slots)]

    def _pending(self, slot: int) -> dict[tuple[Key, int], int]:
        return {
            (key, page): state
            for (s, key), pages in self.model.items()
            if s == slot
            for page, state in pages.items()
        }

    def _check_runs(self, slot: int, runs: list[Run]) -> None:
        want, pairs = self.masks[slot]
        order: list[Key] = []
        for key, first, count, state in runs:
            assert count >= 1
            assert first >= 0
            assert state
            assert state & ~want == 0, "a slot only stores the bits its mask wants"
            for pair in pairs:
                assert state & pair != pair, "a cancelled pair came out"
            assert self.answers[key, slot] is True, "an irrelevant file came out"
            assert (slot, key) not in self.done, "a done file came out"
            if not order or order[-1] != key:
                assert key not in order, "a file's runs are not together"
                order.append(key)
        for (k1, f1, c1, s1), (k2, f2, _, s2) in itertools.pairwise(runs):
            if k1 == k2:
                assert f1 + c1 <= f2, "runs of one file overlap or are out of order"
                assert not (f1 + c1 == f2 and s1 == s2), "runs not coalesced"

    # -- rules -------------------------------------------------------------------------

    @rule(obs=st.lists(observations, min_size=1, max_size=6))
    def ingest(self, obs: list[Observation]) -> None:
        self._apply(sorted(self.masks), obs)
        self.store.ingest(obs)
        assert self.notified == self.expected_notify

    @rule(pick=st.integers(0, MAX_SLOTS - 1), obs=st.lists(observations, min_size=1, max_size=4))
    def ingest_for(self, pick: int, obs: list[Observation]) -> None:
        slot = self._slot(pick)
        self._apply([slot], obs)
        self.store.ingest_for(slot, obs)
        assert self.notified == self.expected_notify

    @rule(pick=st.integers(0, MAX_SLOTS - 1), max_runs=st.integers(1, 6))
    def drain(self, pick: int, max_runs: int) -> None:
        slot = self._slot(pick)
        runs = self.store.drain(slot, max_runs)
        self._check_runs(slot, runs)
        got: dict[Key, dict[int, int]] = defaultdict(dict)
        for (key, page), state in pages_of(runs).items():
            got[key][page] = state
        for key, pages in got.items():
            # Whole files are drained: everything pending for the file came out.
            assert pages == self.model.pop((slot, key), {})
        if len(runs) < max_runs:
            assert self._pending(slot) == {}, "the drain stopped early"

    @rule(pick=st.integers(0, MAX_SLOTS - 1), key=st.sampled_from(KEYS), done=st.booleans())
    def set_done(self, pick: int, key: Key, done: bool) -> None:
        slot = self._slot(pick)
        self.store.set_done(slot, key, done)
        if done:
            self.done.add((slot, key))
            self.model.pop((slot, key), None)
        else:
            self.done.discard((slot, key))
        assert self.store.is_done(slot, key) is done

    @rule(pick=st.integers(0, MAX_SLOTS - 1), key=st.sampled_from(KEYS))
    def relevant(self, pick: int, key: Key) -> None:
        slot = self._slot(pick)
        remembered = key in self.store.keys_of(key[0], key[1])
        before = self.calls[key, slot]
        assert self.store.relevant(slot, key) is self.answers[key, slot]
        if not remembered:
            # The store asks about files it holds nothing of without remembering the answer
            # (CHECK must cost no memory): such a question does not count as a decision.
            assert key not in self.store.keys_of(key[0], key[1])
            self.calls[key, slot] = before

    @rule(key=st.sampled_from(KEYS))
    def forget_relevance(self, key: Key) -> None:
        self.store.forget_relevance(key)
        for slot in range(MAX_SLOTS):
            self.calls.pop((key, slot), None)

    @rule(pick=st.integers(0, MAX_SLOTS - 1), mask=st.sampled_from(VALID_MASKS))
    def replace_slot(self, pick: int, mask: Event) -> None:
        slot = self._slot(pick)
        self.store.remove_slot(slot)
        del self.masks[slot]
        for key in KEYS:
            self.model.pop((slot, key), None)
            self.done.discard((slot, key))
            self.calls.pop((key, slot), None)
        assert self.store.add_slot(mask) == slot  # the lowest free slot
        self.masks[slot] = model_mask(mask)

    @rule(mask=st.sampled_from(VALID_MASKS))
    def add_slot(self, mask: Event) -> None:
        # Also when all slots are taken: then the store must answer -1.
        slot = self.store.add_slot(mask)
        free = set(range(MAX_SLOTS)) - set(self.masks)
        if not free:
            assert slot == -1
            return
        assert slot == min(free)
        self.masks[slot] = model_mask(mask)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def pending_matches_model(self) -> None:
        distinct = set()
        for slot in self.masks:
            pending = self._pending(slot)
            distinct |= set(pending)
            assert self.store.pending_pages(slot) == len(pending)
            if pending:
                assert self.store.has_pending(slot)
        assert self.store.statistics().pending_pages == len(distinct)

    @invariant()
    def relevance_decided_once(self) -> None:
        for (key, slot), calls in self.calls.items():
            if self.answers[key, slot] is not None:
                assert calls <= 1, f"relevance of {key} asked {calls} times for slot {slot}"

    def teardown(self) -> None:
        if not self.masks:
            return
        for slot in sorted(self.masks):
            runs = self.store.drain(slot, 1 << 30)
            self._check_runs(slot, runs)
            assert pages_of(runs) == self._pending(slot)
            assert not self.store.has_pending(slot)
            assert self.store.pending_pages(slot) == 0
        assert self.store.statistics().pending_pages == 0


StoreMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=20, deadline=None, report_multiple_bugs=False
)
TestStoreAgainstModel = StoreMachine.TestCase


# -- unit tests ----------------------------------------------------------------------------


def test_removing_slots_drops_the_entries_nobody_needs() -> None:
    store = Store(4, relevance=relevant_to_all)
    first = store.add_slot(Event.EXISTS)
    store.ingest([(A, 0, 3, ADDED)])
    second = store.add_slot(Event.EXISTS)
    store.ingest([(B, 0, 1, ADDED)])  # decided for both slots
    store.drain(first, 10)
    store.remove_slot(first)
    assert store.keys_of(*A[:2]) == []  # only the removed slot knew it
    assert store.keys_of(*B[:2]) == [B]  # pending for the remaining slot
    store.drain(second, 10)
    store.remove_slot(second)
    assert store.statistics().files == 0


def test_exists_only_receives_added() -> None:
    store = Store(4, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    store.ingest([(A, 0, 3, ADDED)])
    assert store.drain(slot, 10) == [(A, 0, 3, ADDED)]
    store.ingest([(A, 1, 1, REMOVED)])
    assert store.drain(slot, 10) == [(A, 1, 1, REMOVED)]


def test_added_then_removed_before_drain() -> None:
    store = Store(4, relevance=relevant_to_all)
    exists = store.add_slot(Event.EXISTS)
    events = store.add_slot(Event.ADDED | Event.REMOVED)
    store.ingest([(A, 0, 4, ADDED)])
    store.ingest([(A, 0, 4, REMOVED)])
    assert store.drain(exists, 10) == []
    assert store.pending_pages(exists) == 0
    assert store.drain(events, 10) == [(A, 0, 4, ADDED | REMOVED)]
    assert store.statistics().pending_pages == 0


def test_exists_cancel_leaves_net_change_only() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    # added, removed (cancels), added again: net ADDED.
    store.ingest([(A, 0, 1, ADDED), (A, 0, 1, REMOVED), (A, 0, 1, ADDED)])
    assert store.drain(slot, 10) == [(A, 0, 1, ADDED)]
    # removed then added after a drain: present before and after, no net change.
    store.ingest([(A, 0, 1, REMOVED), (A, 0, 1, ADDED)])
    assert store.drain(slot, 10) == []
    assert store.statistics().pending_pages == 0


def test_modified_cancels_dirty_and_flushed() -> None:
    store = Store(4, relevance=relevant_to_all)
    modified = store.add_slot(Event.MODIFIED)
    events = store.add_slot(Event.DIRTY | Event.FLUSHED)
    store.ingest([(A, 0, 2, DIRTY), (A, 0, 2, FLUSHED)])
    assert store.drain(modified, 10) == []
    assert store.drain(events, 10) == [(A, 0, 2, DIRTY | FLUSHED)]
    store.ingest([(A, 0, 2, DIRTY)])
    assert store.drain(modified, 10) == [(A, 0, 2, DIRTY)]
    store.ingest([(A, 0, 2, FLUSHED)])
    assert store.drain(modified, 10) == [(A, 0, 2, FLUSHED)]
    # FLUSHED then DIRTY also cancels.
    store.ingest([(A, 5, 1, FLUSHED), (A, 5, 1, DIRTY)])
    assert store.drain(modified, 10) == []


def test_a_page_that_leaves_the_cache_is_no_longer_dirty() -> None:
    # For a task that keeps the dirty state, a REMOVED drops the DIRTY pending before it:
    # added, dirtied and removed before a fetch is no change at all (it used to leave DIRTY:
    # a page gone from the cache, told as dirty; bench/soak.py found it).
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS | Event.MODIFIED)
    store.ingest([(A, 0, 1, ADDED | DIRTY), (A, 0, 1, REMOVED)])
    assert store.drain(slot, 10) == []
    store.ingest([(A, 0, 1, ADDED | DIRTY), (A, 0, 1, FLUSHED)])
    assert store.drain(slot, 10) == [(A, 0, 1, ADDED)]
    # Removed, then read and written again: a DIRTY after the REMOVED stays.
    store.ingest([(A, 0, 1, REMOVED), (A, 0, 1, ADDED | DIRTY)])
    assert store.drain(slot, 10) == [(A, 0, 1, DIRTY)]
    # A slot that does not see removals keeps its DIRTY.
    dirty_only = store.add_slot(Event.MODIFIED)
    store.ingest([(A, 0, 1, DIRTY), (A, 0, 1, REMOVED)])
    assert store.drain(dirty_only, 10) == [(A, 0, 1, DIRTY)]
    assert store.drain(slot, 10) == [(A, 0, 1, REMOVED)]  # gone: no longer dirty


def test_a_slot_stores_only_the_bits_it_wants() -> None:
    store = Store(2, relevance=relevant_to_all)
    exists = store.add_slot(Event.EXISTS)
    store.ingest([(A, 0, 4, DIRTY), (A, 2, 4, FLUSHED)])
    assert store.statistics().pending_pages == 0
    assert store.drain(exists, 10) == []
    store.ingest([(A, 0, 1, ADDED | DIRTY)])
    assert store.drain(exists, 10) == [(A, 0, 1, ADDED)]


def test_two_slots_share_one_entry_per_page() -> None:
    store = Store(4, relevance=relevant_to_all)
    first = store.add_slot(Event.ADDED)
    second = store.add_slot(Event.EXISTS)
    store.ingest([(A, 0, 10, ADDED)])
    assert store.statistics().pending_pages == 10
    assert store.pending_pages(first) == 10
    assert store.pending_pages(second) == 10
    assert store.drain(first, 10) == [(A, 0, 10, ADDED)]
    assert store.statistics().pending_pages == 10  # still pending for the second slot
    assert store.pending_pages(first) == 0
    store.ingest([(A, 5, 1, REMOVED)])  # the first slot does not want REMOVED
    assert store.drain(first, 10) == []
    assert store.drain(second, 10) == [(A, 0, 5, ADDED), (A, 6, 4, ADDED)]
    assert store.statistics().pending_pages == 0


def test_drain_coalesces_and_splits_on_state() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.ADDED | Event.DIRTY)
    store.ingest(
        [
            (A, 2, 2, ADDED),
            (A, 0, 2, ADDED),
            (A, 4, 1, ADDED | DIRTY),
            (A, 5, 1, ADDED),
            (A, 6, 1, DIRTY),
            (A, 7, 2, DIRTY),
            (A, 11, 1, DIRTY),
        ]
    )
    assert store.drain(slot, 100) == [
        (A, 0, 4, ADDED),
        (A, 4, 1, ADDED | DIRTY),
        (A, 5, 1, ADDED),
        (A, 6, 3, DIRTY),
        (A, 11, 1, DIRTY),
    ]


def test_drain_takes_whole_files_and_stops_at_max_runs() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.ADDED)
    store.ingest([(A, 0, 1, ADDED), (A, 5, 1, ADDED), (A, 9, 1, ADDED), (B, 0, 2, ADDED)])
    assert store.pending_files(slot) == 2
    first = store.drain(slot, 1)
    assert first == [(A, 0, 1, ADDED), (A, 5, 1, ADDED), (A, 9, 1, ADDED)]
    assert store.has_pending(slot)
    assert store.drain(slot, 1) == [(B, 0, 2, ADDED)]
    assert not store.has_pending(slot)
    assert store.drain(slot, 1) == []


def test_set_done_drops_pending_and_blocks_future() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.ADDED)
    other = store.add_slot(Event.ADDED)
    store.ingest([(A, 0, 4, ADDED), (B, 0, 1, ADDED)])
    store.set_done(slot, A, True)
    assert store.is_done(slot, A)
    assert not store.is_done(other, A)
    assert store.pending_pages(slot) == 1
    store.ingest([(A, 10, 1, ADDED)])
    assert store.drain(slot, 10) == [(B, 0, 1, ADDED)]
    # The other slot is unaffected.
    assert store.drain(other, 10) == [(A, 0, 4, ADDED), (A, 10, 1, ADDED), (B, 0, 1, ADDED)]
    assert store.statistics().pending_pages == 0
    # Reset: future events come through again (earlier ones stay dropped).
    store.set_done(slot, A, False)
    assert not store.is_done(slot, A)
    assert store.drain(slot, 10) == []
    store.ingest([(A, 20, 1, ADDED)])
    assert store.drain(slot, 10) == [(A, 20, 1, ADDED)]


def test_set_done_on_unknown_file_blocks_it() -> None:
    store = Store(1, relevance=relevant_to_all)
    slot = store.add_slot(Event.ADDED)
    assert not store.is_done(slot, C)
    store.set_done(slot, C, True)
    assert store.is_done(slot, C)
    store.ingest([(C, 0, 1, ADDED)])
    assert store.drain(slot, 10) == []
    assert store.statistics().pending_pages == 0


def test_relevance_is_decided_once_per_slot_and_file() -> None:
    calls: Counter[tuple[Key, int]] = Counter()

    def relevance(key: Key, slot: int) -> bool:
        calls[key, slot] += 1
        return key != B

    store = Store(4, relevance=relevance)
    first = store.add_slot(Event.ADDED)
    second = store.add_slot(Event.EXISTS)
    for _ in range(5):
        store.ingest([(A, 0, 1, ADDED), (B, 0, 1, ADDED)])
    assert calls == {(A, first): 1, (A, second): 1, (B, first): 1, (B, second): 1}
    assert store.relevant(first, A) is True
    assert store.relevant(second, B) is False
    assert sum(calls.values()) == 4
    assert store.drain(first, 10) == [(A, 0, 1, ADDED)]

    store.forget_relevance(A)
    store.ingest([(A, 0, 1, ADDED)])
    assert calls[A, first] == 2
    assert calls[A, second] == 2
    assert calls[B, first] == 1

    # A slot added later is asked about a known file once, the others are not asked again.
    third = store.add_slot(Event.ADDED)
    store.ingest([(A, 1, 1, ADDED)])
    store.ingest([(A, 2, 1, ADDED)])
    assert calls[A, third] == 1
    assert calls[A, first] == 2


def test_relevance_none_means_ask_again() -> None:
    answers: list[bool | None] = [None, None, True]
    calls: list[tuple[Key, int]] = []

    def relevance(key: Key, slot: int) -> bool | None:
        calls.append((key, slot))
        return answers.pop(0) if answers else False

    store = Store(2, relevance=relevance)
    slot = store.add_slot(Event.ADDED)
    store.ingest([(A, 0, 1, ADDED)])
    assert store.drain(slot, 10) == []
    assert store.relevant(slot, A) is None
    assert len(calls) == 2
    store.ingest([(A, 1, 1, ADDED)])
    assert len(calls) == 3
    assert store.drain(slot, 10) == [(A, 1, 1, ADDED)]
    store.ingest([(A, 2, 1, ADDED)])
    assert store.relevant(slot, A) is True
    assert len(calls) == 3  # decided: no more questions
    assert store.drain(slot, 10) == [(A, 2, 1, ADDED)]


def test_irrelevant_files_never_come_out() -> None:
    store = Store(2, relevance=lambda key, slot: key == A)
    slot = store.add_slot(Event.ADDED)
    store.ingest([(B, 0, 5, ADDED), (A, 0, 1, ADDED), (C, 0, 5, ADDED)])
    assert store.drain(slot, 10) == [(A, 0, 1, ADDED)]
    assert store.statistics().pending_pages == 0
    assert store.relevant(slot, B) is False


def test_remove_slot_leaves_nothing_stale_for_the_next_task() -> None:
    calls: Counter[tuple[Key, int]] = Counter()

    def relevance(key: Key, slot: int) -> bool:
        calls[key, slot] += 1
        return True

    notified: list[int] = []
    store = Store(2, relevance=relevance, notify=notified.append)
    keep = store.add_slot(Event.ADDED)
    slot = store.add_slot(Event.EXISTS)
    store.ingest([(A, 0, 4, ADDED), (B, 0, 2, ADDED)])
    store.set_done(slot, C, True)
    store.signal_overflow(1 << slot)
    store.remove_slot(slot)
    assert store.active_slots == 1 << keep
    assert store.statistics().pending_pages == 6  # still pending for the kept slot

    assert store.add_slot(Event.ADDED | Event.REMOVED) == slot
    assert store.drain(slot, 10) == []
    assert store.pending_pages(slot) == 0
    assert not store.has_pending(slot)
    assert not store.take_overflow(slot)
    assert not store.is_done(slot, C)
    assert calls[A, slot] == 1
    store.ingest([(A, 0, 1, REMOVED), (C, 0, 1, ADDED)])
    assert calls[A, slot] == 2  # the new task's relevance is decided afresh
    assert store.drain(slot, 10) == [(A, 0, 1, REMOVED), (C, 0, 1, ADDED)]
    assert store.drain(keep, 10) == [(A, 0, 4, ADDED), (B, 0, 2, ADDED), (C, 0, 1, ADDED)]
    assert store.statistics().pending_pages == 0


def test_remove_slot_frees_pages_held_only_by_it() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    store.ingest([(A, 0, 50, ADDED)])
    assert store.statistics().pending_pages == 50
    store.remove_slot(slot)
    assert store.statistics().pending_pages == 0
    assert store.statistics().pending_files == 0


def test_notify_once_per_ingest_with_slot_bits() -> None:
    notified: list[int] = []
    store = Store(
        4, relevance=lambda key, slot: not (key == B and slot == 0), notify=notified.append
    )
    s0 = store.add_slot(Event.ADDED)
    s1 = store.add_slot(Event.ADDED)
    s2 = store.add_slot(Event.DIRTY)
    store.ingest([(A, 0, 1, ADDED), (A, 1, 1, ADDED), (B, 0, 1, ADDED)])
    assert notified == [(1 << s0) | (1 << s1)]
    notified.clear()
    store.ingest([(B, 0, 1, ADDED)])
    assert notified == [1 << s1]
    notified.clear()
    store.ingest([(A, 0, 1, DIRTY | ADDED)])
    assert notified == [(1 << s0) | (1 << s1) | (1 << s2)]
    notified.clear()
    store.ingest([(A, 0, 1, FLUSHED)])  # nobody wants it
    store.ingest([])
    assert notified == []
    store.ingest_for(s1, [(A, 7, 1, ADDED)])
    assert notified == [1 << s1]


def test_ingest_for_targets_one_slot_only() -> None:
    store = Store(4, relevance=relevant_to_all)
    s0 = store.add_slot(Event.ADDED)
    s1 = store.add_slot(Event.ADDED)
    store.ingest_for(s1, [(A, 0, 3, ADDED)])
    assert store.drain(s0, 10) == []
    assert store.pending_pages(s0) == 0
    assert store.drain(s1, 10) == [(A, 0, 3, ADDED)]
    # It still honours the slot's mask and done bit.
    store.ingest_for(s1, [(A, 0, 1, DIRTY)])
    store.set_done(s0, B, True)
    store.ingest_for(s0, [(B, 0, 1, ADDED)])
    assert store.drain(s1, 10) == []
    assert store.drain(s0, 10) == []


def test_overflow_is_signalled_and_taken_once() -> None:
    notified: list[int] = []
    store = Store(4, relevance=relevant_to_all, notify=notified.append)
    s0 = store.add_slot(Event.ADDED)
    s1 = store.add_slot(Event.ADDED)
    assert not store.has_pending(s0)
    store.signal_overflow((1 << s0) | (1 << 3))  # slot 3 is not in use
    assert notified == [1 << s0]
    assert store.has_pending(s0)
    assert not store.has_pending(s1)
    assert not store.take_overflow(s1)
    assert store.take_overflow(s0)
    assert not store.take_overflow(s0)
    assert not store.has_pending(s0)
    notified.clear()
    store.signal_overflow(1 << 3)
    assert notified == []
    assert not store.take_overflow(3)


def test_stalled_slot_memory_is_bounded_by_distinct_pages() -> None:
    store = Store(4, relevance=relevant_to_all)
    events = store.add_slot(Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED)
    exists = store.add_slot(Event.EXISTS)
    cycle = [ADDED, DIRTY, FLUSHED, REMOVED]
    batch = [(A, i % 100, 1, cycle[(i // 100) % 4]) for i in range(100_000)]
    store.ingest(batch)
    assert store.observations == 100_000
    stats = store.statistics()
    assert stats.pending_pages == 100
    assert stats.pending_files == 1
    assert store.pending_pages(events) == 100
    assert store.pending_pages(exists) == 0  # added and removed the same number of times
    memory = stats.memory_bytes
    store.ingest(batch)
    assert store.statistics().pending_pages == 100
    assert store.statistics().memory_bytes == memory
    assert store.drain(events, 10) == [(A, 0, 100, 0xF)]
    assert store.statistics().pending_pages == 0


def test_sixty_four_slots() -> None:
    notified: list[int] = []
    store = Store(64, relevance=relevant_to_all, notify=notified.append)
    slots = [store.add_slot(Event.EXISTS) for _ in range(64)]
    assert slots == list(range(64))
    assert store.add_slot(Event.ADDED) == -1
    store.ingest([(A, 0, 2, ADDED)])
    assert notified == [(1 << 64) - 1]
    assert store.statistics().pending_pages == 2
    assert store.drain(63, 10) == [(A, 0, 2, ADDED)]
    assert store.pending_pages(62) == 2
    store.set_done(63, A, True)
    assert store.is_done(63, A)
    assert not store.is_done(62, A)
    store.ingest([(A, 0, 2, REMOVED)])  # cancels for slots 0..62, slot 63 is done
    assert store.drain(62, 10) == []
    assert store.drain(63, 10) == []
    store.remove_slot(63)
    assert store.add_slot(Event.MODIFIED) == 63
    store.ingest([(B, 3, 1, DIRTY)])
    assert store.drain(63, 10) == [(B, 3, 1, DIRTY)]
    assert store.pending_pages(0) == 0


def test_add_slot_returns_minus_one_when_full() -> None:
    store = Store(2)
    assert store.add_slot(Event.ADDED) == 0
    assert store.add_slot(Event.EXISTS) == 1
    assert store.add_slot(Event.MODIFIED) == -1
    store.remove_slot(0)
    assert store.add_slot(Event.MODIFIED) == 0
    assert store.add_slot(Event.MODIFIED) == -1


@pytest.mark.parametrize("max_slots", [0, 65])
def test_max_slots_is_checked(max_slots: int) -> None:
    with pytest.raises(ValueError, match="max_slots"):
        Store(max_slots)


def test_forget_drops_the_file_and_its_pages() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.ADDED)
    store.ingest([(A, 0, 3, ADDED), (B, 0, 1, ADDED)])
    assert store.keys_of(1, 10) == [A]
    store.forget(A)
    assert store.keys_of(1, 10) == []
    assert store.statistics().pending_pages == 1
    assert store.drain(slot, 10) == [(B, 0, 1, ADDED)]
    store.forget(A)  # twice is fine


def test_keys_of_returns_the_latest_generation() -> None:
    store = Store(1, relevance=relevant_to_all)
    store.add_slot(Event.ADDED)
    old, new = (1, 10, 0), (1, 10, 7)
    assert store.keys_of(1, 10) == []
    store.ingest([(old, 0, 1, ADDED)])
    assert store.keys_of(1, 10) == [old]
    store.ingest([(new, 0, 1, ADDED)])
    assert store.keys_of(1, 10) == [new]
    store.forget(old)  # an older generation going away does not hide the new one
    assert store.keys_of(1, 10) == [new]


def test_statistics_counts_files_and_memory() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.ADDED)
    assert store.statistics().files == 0
    store.ingest([(A, 0, 3, ADDED), (B, 0, 2, ADDED)])
    stats = store.statistics()
    assert (stats.files, stats.pending_files, stats.pending_pages) == (2, 2, 5)
    assert stats.memory_bytes > 0
    store.drain(slot, 10)
    after = store.statistics()
    assert (after.files, after.pending_files, after.pending_pages) == (2, 0, 0)
    assert after.memory_bytes == stats.memory_bytes - 5 * BYTES_PER_PAGE


def test_without_slots_nothing_is_remembered() -> None:
    store = Store(4, relevance=relevant_to_all)
    store.ingest([(A, 0, 3, ADDED)])
    assert store.statistics().files == 0
    slot = store.add_slot(Event.EXISTS)
    store.remove_slot(slot)
    store.ingest([(B, 0, 1, ADDED)])  # late, after the last task went
    assert store.statistics().files == 0


# -- entries of files that are gone -----------------------------------------------------------


def test_a_new_generation_of_an_inode_retires_the_old_one() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    old, new, third = (1, 10, 5), (1, 10, 7), (1, 10, 9)
    store.ingest([(old, 0, 2, ADDED)])
    store.drain(slot, 10)
    store.ingest([(new, 0, 1, ADDED)])  # the number was freed and given to a new file
    assert store.statistics().files == 1
    assert store.keys_of(1, 10) == [new]
    # An old generation with pages pending stays until its pages are drained.
    store.ingest([(third, 0, 3, ADDED)])
    assert store.statistics().files == 2
    assert sorted(store.drain(slot, 10)) == [(new, 0, 1, ADDED), (third, 0, 3, ADDED)]
    assert store.statistics().files == 1
    assert store.keys_of(1, 10) == [third]


def test_a_generation_of_zero_retires_nothing() -> None:
    # 0 is a source's "generation not known yet": the file may well be the same one.
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    known, unknown = (1, 10, 5), (1, 10, 0)
    store.ingest([(known, 0, 1, ADDED)])
    store.set_done(slot, known, True)
    store.ingest([(unknown, 1, 1, ADDED)])
    store.ingest([(known, 2, 1, ADDED)])
    assert store.is_done(slot, known)
    assert store.drain(slot, 10) == [(unknown, 1, 1, ADDED)]
    assert store.statistics().files == 2


def test_a_late_observation_of_a_retired_file_is_told_then_dropped() -> None:
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    store.ingest([(A, 0, 4, ADDED)])
    store.drain(slot, 10)
    store.retire(A)
    assert store.statistics().files == 0
    store.ingest([(A, 0, 4, REMOVED)])  # its pages leave the cache after it was retired
    assert store.drain(slot, 10) == [(A, 0, 4, REMOVED)]
    assert store.statistics().files == 0
    other = store.add_slot(Event.DIRTY)
    store.ingest([(A, 0, 1, FLUSHED)])  # a late observation no slot takes leaves nothing
    store.set_done(other, A, False)  # nor does a done mark cleared on it
    assert store.drain(slot, 10) == [] and store.drain(other, 10) == []
    assert store.statistics().files == 0


def test_a_retired_file_that_comes_back_keeps_its_entry() -> None:
    # Retired because it was moved out of every scope; moved back in, its pages come again.
    store = Store(2, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    store.retire(A)
    store.ingest([(A, 0, 2, ADDED)])
    store.set_done(slot, A, True)
    store.ingest([(A, 2, 1, ADDED)])
    assert store.is_done(slot, A)
    assert store.drain(slot, 10) == []
    assert store.statistics().files == 1


def test_retired_keys_are_remembered_up_to_a_bound() -> None:
    store = Store(1, relevance=relevant_to_all)
    slot = store.add_slot(Event.EXISTS)
    keys = [(3, ino, 1) for ino in range(GONE_MEMORY + 1)]
    for key in keys:
        store.retire(key)
    store.ingest([(keys[0], 0, 1, REMOVED), (keys[-1], 0, 1, REMOVED)])
    store.drain(slot, 10)
    # The first was forgotten to keep the bound: its entry stays as any file's would.
    assert store.keys_of(3, 0) == [keys[0]]
    assert store.keys_of(3, GONE_MEMORY) == []
    store.remove_slot(slot)  # the last task gone: nothing is kept, retired keys neither
    assert store.statistics().files == 0
    later = store.add_slot(Event.EXISTS)
    store.ingest([(keys[-1], 0, 1, REMOVED)])
    assert store.keys_of(3, GONE_MEMORY) == [keys[-1]]
    store.drain(later, 10)


# -- files relevant to no task ------------------------------------------------------------------


def test_a_file_relevant_to_no_task_holds_no_entry_and_is_decided_once() -> None:
    calls: Counter[tuple[Key, int]] = Counter()

    def relevance(key: Key, slot: int) -> bool:
        calls[key, slot] += 1
        return key == A

    store = Store(4, relevance=relevance)
    first = store.add_slot(Event.EXISTS)
    second = store.add_slot(Event.EXISTS)
    for _ in range(3):
        store.ingest([(A, 0, 1, ADDED), (B, 0, 1, ADDED)])
    assert calls == {(A, first): 1, (A, second): 1, (B, first): 1, (B, second): 1}
    assert store.statistics().files == 1  # A only
    assert store.statistics().memory_bytes > BYTES_PER_FILE + BYTES_PER_PAGE
    assert store.relevant(first, B) is False
    assert store.keys_of(*B[:2]) == [B]
    # A task registered later is asked about it; the others are not asked again.
    third = store.add_slot(Event.EXISTS)
    store.ingest([(B, 1, 1, ADDED)])
    store.ingest([(B, 2, 1, ADDED)])
    assert (calls[B, first], calls[B, second], calls[B, third]) == (1, 1, 1)
    # A rename: every task decides again.
    store.forget_relevance(B)
    store.ingest([(B, 3, 1, ADDED)])
    assert (calls[B, first], calls[B, second], calls[B, third]) == (2, 2, 2)
    assert store.drain(first, 10) == [(A, 0, 1, ADDED)]


def test_a_task_reusing_a_departed_slot_decides_for_itself() -> None:
    answers = {0: False, 1: False}
    store = Store(2, relevance=lambda key, slot: answers[slot])
    first = store.add_slot(Event.EXISTS)
    second = store.add_slot(Event.EXISTS)
    store.ingest([(B, 0, 1, ADDED)])
    assert store.statistics().files == 0
    store.remove_slot(second)
    answers[1] = True
    again = store.add_slot(Event.EXISTS)
    assert again == second
    store.ingest([(B, 1, 1, ADDED)])
    assert store.drain(again, 10) == [(B, 1, 1, ADDED)]
    assert store.drain(first, 10) == []


def test_files_relevant_to_no_task_are_remembered_up_to_a_bound() -> None:
    calls: Counter[Key] = Counter()

    def relevance(key: Key, slot: int) -> bool:
        calls[key] += 1
        return False

    store = Store(1, relevance=relevance)
    store.add_slot(Event.EXISTS)
    keys = [(4, ino, 1) for ino in range(OUTSIDE_MEMORY + 1)]
    store.ingest([(key, 0, 1, ADDED) for key in keys])
    store.ingest([(keys[0], 1, 1, ADDED), (keys[-1], 1, 1, ADDED)])
    assert (calls[keys[0]], calls[keys[-1]]) == (2, 1)  # the least recently seen was let go
    assert store.statistics().files == 0
