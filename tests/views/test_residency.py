"""The residency view: state-based items applied in order give cached and dirty pages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aioduet import Event, Item, Uuid
from aioduet.views import Activity, ResidencyView

U = Uuid(1, 10, 0)


def test_added_and_removed_pages_are_tracked() -> None:
    view = ResidencyView()
    view.apply(Item(U, 0, 8, Event.ADDED))
    view.apply(Item(U, 2, 2, Event.REMOVED))
    state = view.files[(1, 10)]
    assert state.cached == 6
    assert state.cached_in(0, 4) == 2
    assert state.activity == Activity(added=8, removed=2)
    assert view.cached == 6


def test_dirty_pages_are_cached_until_flushed_or_removed() -> None:
    view = ResidencyView()
    view.apply(Item(U, 4, 4, Event.ADDED | Event.DIRTY))
    view.apply(Item(U, 4, 1, Event.FLUSHED))
    view.apply(Item(U, 7, 1, Event.REMOVED))
    state = view.files[(1, 10)]
    assert (state.cached, state.dirty) == (3, 2)
    assert state.activity == Activity(added=4, removed=1, dirtied=4, flushed=1)
    assert view.dirty == 2


def test_repeated_items_count_pages_that_changed_only() -> None:
    view = ResidencyView()
    view.apply(Item(U, 0, 4, Event.ADDED))
    view.apply(Item(U, 2, 4, Event.ADDED))
    view.apply(Item(U, 10, 4, Event.REMOVED))  # beyond what is known: nothing to remove
    assert view.files[(1, 10)].activity == Activity(added=6)


def test_an_overflow_empties_every_map_and_keeps_the_files() -> None:
    # Observations were lost: the current state follows, as at registration.
    view = ResidencyView()
    view.apply_all([Item(U, 0, 4, Event.ADDED), Item(U, 1, 2, Event.DIRTY)])
    changed = view.apply_all([Item(Uuid(1, 2, 0), 0, 0, Event.OVERFLOW)])
    assert changed == {(1, 10)}
    assert (view.overflows, view.items, view.cached, view.dirty) == (1, 3, 0, 0)
    state = view.files[(1, 10)]
    assert (state.cached, state.dirty) == (0, 0)
    assert state.activity == Activity(added=4, dirtied=2)
    view.apply(Item(U, 2, 1, Event.ADDED))  # the rescan's picture
    assert (view.cached, view.files[(1, 10)].cached) == (1, 1)


def test_a_reused_inode_starts_afresh() -> None:
    view = ResidencyView()
    view.apply(Item(U, 0, 4, Event.ADDED))
    changed = view.apply_all([Item(Uuid(1, 10, 7), 0, 1, Event.ADDED)])
    assert changed == {(1, 10)}
    assert view.files[(1, 10)].cached == 1


_STATES = [
    Event.ADDED,
    Event.REMOVED,
    Event.DIRTY,
    Event.FLUSHED,
    Event.ADDED | Event.DIRTY,
    Event.REMOVED | Event.FLUSHED,
]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),  # inode
            st.integers(0, 1),  # generation
            st.integers(0, 40),  # first page
            st.integers(1, 20),  # pages
            st.sampled_from(_STATES),
        ),
        max_size=60,
    )
)
def test_the_totals_kept_as_items_come_are_the_sums_over_files(
    steps: list[tuple[int, int, int, int, Event]],
) -> None:
    view = ResidencyView()
    for ino, gen, first, count, state in steps:
        view.apply(Item(Uuid(1, ino, gen), first, count, state))
    assert view.cached == sum(f.cached for f in view)
    assert view.dirty == sum(f.dirty for f in view)
    assert all(f.dirty_map.count(1) <= f.cached for f in view)
