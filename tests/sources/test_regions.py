"""Adaptive regions of large files: initial layout, splits where counts moved, merges."""

from __future__ import annotations

import random
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from aioduet.sources._regions import (
    MAX_REGIONS,
    MIN_REGIONS,
    REGION_PAGES,
    STABLE_CHECKS,
    Region,
    adapt,
    initial,
)


def _map(pages: int, set_pages: Iterable[int]) -> bytes:
    vector = bytearray(pages)
    for page in set_pages:
        vector[page] = 1
    return bytes(vector)


def _maps(pages: int, cached: Iterable[int], dirty: Iterable[int] = ()) -> tuple[bytes, bytes]:
    return _map(pages, cached), _map(pages, dirty)


def _tiles(regions: list[Region], pages: int) -> bool:
    """Regions cover [0, pages) in order, without gaps or overlaps."""
    position = 0
    for region in regions:
        if region.first != position or region.count <= 0:
            return False
        position = region.end
    return position == pages


def test_small_files_have_no_regions() -> None:
    assert initial(*_maps(2 * REGION_PAGES - 1, set())) is None


def test_initial_regions_tile_the_file_and_count_its_pages() -> None:
    pages = 10 * REGION_PAGES + 7
    cached, dirty = _maps(pages, {0, 1, pages - 1}, {1})
    regions = initial(cached, dirty)
    assert regions is not None
    assert _tiles(regions, pages)
    assert sum(r.cache for r in regions) == 3
    assert sum(r.dirty for r in regions) == 1
    assert all(r.count >= REGION_PAGES for r in regions)


def test_a_region_that_moved_splits_and_stable_neighbours_merge() -> None:
    pages = 16 * REGION_PAGES
    cached, dirty = _maps(pages, {5})
    regions = initial(cached, dirty)
    assert regions is not None and len(regions) == 8
    for region in regions:
        region.stable = STABLE_CHECKS
    regions[0].stable = 0  # page 5 moved
    adapted = adapt(regions, cached, dirty, random.Random(1))
    assert _tiles(adapted, pages)
    # The moved region was cut in two; the seven stable ones merged down to the minimum.
    moved = [r for r in adapted if r.stable == 0]
    assert len(moved) == 2 and sum(r.count for r in moved) == 2 * REGION_PAGES
    assert len(adapted) == MIN_REGIONS
    assert sum(r.cache for r in adapted) == 1


@settings(deadline=None)
@given(
    pages=st.integers(2 * REGION_PAGES, 200 * REGION_PAGES),
    rounds=st.lists(st.lists(st.integers(0, 10**9), max_size=6), max_size=12),
    seed=st.integers(0, 2**32),
)
def test_regions_always_tile_the_file_within_their_limits(
    pages: int, rounds: list[list[int]], seed: int
) -> None:
    rng = random.Random(seed)
    cached, dirty = _maps(pages, set())
    regions = initial(cached, dirty)
    assert regions is not None
    for moves in rounds:
        hit = {m % pages for m in moves}
        cached, dirty = _maps(pages, hit)
        for region in regions:
            count = cached.count(1, region.first, region.end)
            if count != region.cache:
                region.cache, region.stable = count, 0
            else:
                region.stable += 1
        regions = adapt(regions, cached, dirty, rng)
        assert _tiles(regions, pages)
        assert len(regions) <= MAX_REGIONS
        assert all(r.count >= REGION_PAGES for r in regions)
        assert [r.cache for r in regions] == [cached.count(1, r.first, r.end) for r in regions]
