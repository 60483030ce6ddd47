"""Store.relocate: a file whose path changed leaves some scopes and enters others."""

from __future__ import annotations

from aioduet import Event
from aioduet.store import Store

KEY = (1, 2, 3)
A, R, D, F = (int(e) for e in (Event.ADDED, Event.REMOVED, Event.DIRTY, Event.FLUSHED))


def make(scopes: dict[int, bool]) -> tuple[Store, dict[int, bool]]:
    """A store whose relevance answers come from a mutable slot -> bool map."""
    store = Store(4, relevance=lambda key, slot: scopes.get(slot))
    return store, scopes


def test_slots_left_get_the_opposite_and_slots_joined_get_the_state() -> None:
    store, scopes = make({})
    left = store.add_slot(Event.EXISTS | Event.MODIFIED)
    joined = store.add_slot(Event.EXISTS | Event.MODIFIED)
    stays = store.add_slot(Event.ADDED | Event.REMOVED)
    scopes.update({left: True, joined: False, stays: True})
    store.ingest([(KEY, 0, 4, A), (KEY, 1, 1, D)])
    assert store.drain(left, 10) == [(KEY, 0, 1, A), (KEY, 1, 1, A | D), (KEY, 2, 2, A)]
    assert store.drain(stays, 10) == [(KEY, 0, 4, A)]
    assert store.drain(joined, 10) == []

    scopes.update({left: False, joined: True})
    store.relocate(KEY, [(0, 4, A), (1, 1, D)])
    assert store.drain(left, 10) == [(KEY, 0, 1, R), (KEY, 1, 1, R | F), (KEY, 2, 2, R)]
    assert store.drain(joined, 10) == [(KEY, 0, 1, A), (KEY, 1, 1, A | D), (KEY, 2, 2, A)]
    assert store.drain(stays, 10) == []  # still relevant: nothing changed for it
    # From now on the new answers route observations.
    store.ingest([(KEY, 9, 1, A)])
    assert store.drain(left, 10) == []
    assert store.drain(joined, 10) == [(KEY, 9, 1, A)]


def test_relocate_cancels_against_pending_state() -> None:
    """Pending ADDED, then the file leaves: an EXISTS slot ends up with nothing at all."""
    store, scopes = make({})
    slot = store.add_slot(Event.EXISTS)
    scopes[slot] = True
    store.ingest([(KEY, 0, 2, A)])
    scopes[slot] = False
    store.relocate(KEY, [(0, 2, A)])
    assert store.drain(slot, 10) == []
    assert store.statistics().pending_pages == 0


def test_done_files_and_unknown_files_are_left_alone() -> None:
    store, scopes = make({})
    slot = store.add_slot(Event.EXISTS)
    scopes[slot] = True
    store.relocate(KEY, [(0, 1, A)])  # never seen: nothing to tell anyone
    assert store.drain(slot, 10) == []
    store.ingest([(KEY, 0, 1, A)])
    store.set_done(slot, KEY, True)
    scopes[slot] = False
    store.relocate(KEY, [(0, 1, A)])
    assert store.drain(slot, 10) == []
