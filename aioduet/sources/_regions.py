"""Adaptive regions of a large file, after DAMON's region-based sampling.

A large file is watched as a list of contiguous regions, each with the cached and dirty
page counts it had when last checked. A check asks cachestat for each region's counts (one
call per region) and maps with mincore only the regions whose counts moved, so a 1 GiB file
in which a few pages changed costs a few dozen calls and a small window, not a 1 GiB map.

Regions adapt as DAMON's do: a region whose counts moved splits at a random point between
10% and 90% of its length (changes are located more finely next time), and two neighbours
that have both been stable for a while merge (quiet parts of the file cost less), within
:data:`MIN_REGIONS` and :data:`MAX_REGIONS` regions and never below :data:`REGION_PAGES`
pages per region.
"""

from __future__ import annotations

import itertools
import random

import attrs

__all__ = [
    "MAX_REGIONS",
    "MIN_REGIONS",
    "REGION_PAGES",
    "STABLE_CHECKS",
    "Region",
    "adapt",
    "initial",
]

REGION_PAGES = 512
"""The smallest region, in pages (2 MiB of 4 KiB pages); smaller files are mapped whole."""
MIN_REGIONS = 4
"""Regions are not merged below this many (DAMON's min_nr_regions)."""
MAX_REGIONS = 64
"""Regions are not split beyond this many (DAMON's max_nr_regions, per file)."""
STABLE_CHECKS = 2
"""Checks without change after which two neighbouring regions may merge."""


@attrs.define(eq=False, slots=True)
class Region:
    """Pages ``[first, first + count)`` of a file and their counts at the last check."""

    first: int
    count: int
    cache: int
    dirty: int
    stable: int = 0
    """Consecutive checks in which the counts did not move."""

    @property
    def end(self) -> int:
        """The page after the region."""
        return self.first + self.count


def initial(cached: bytes, dirty: bytes) -> list[Region] | None:
    """Equal regions over a freshly mapped file, or None when it is too small for regions."""
    pages = len(cached)
    parts = min(MIN_REGIONS * 2, pages // REGION_PAGES)
    if parts < 2:
        return None
    bounds = [pages * i // parts for i in range(parts + 1)]
    return [_region(cached, dirty, a, b) for a, b in itertools.pairwise(bounds)]


def _region(cached: bytes, dirty: bytes, first: int, end: int, stable: int = 0) -> Region:
    return Region(
        first, end - first, cached.count(1, first, end), dirty.count(1, first, end), stable
    )


def adapt(regions: list[Region], cached: bytes, dirty: bytes, rng: random.Random) -> list[Region]:
    """Split the regions that moved, then merge neighbours that stayed stable.

    ``regions`` carry up-to-date counts and ``stable`` ages (0 for a region that just moved);
    ``cached`` and ``dirty`` are the file's current maps, used to count the pieces of a split.
    """
    out: list[Region] = []
    room = MAX_REGIONS - len(regions)
    for region in regions:
        if region.stable == 0 and room > 0 and region.count >= 2 * REGION_PAGES:
            low = max(REGION_PAGES, region.count // 10)
            high = min(region.count - REGION_PAGES, region.count * 9 // 10)
            cut = region.first + rng.randint(low, max(low, high))
            out.append(_region(cached, dirty, region.first, cut))
            out.append(_region(cached, dirty, cut, region.end))
            room -= 1
        else:
            out.append(region)
    merged: list[Region] = []
    excess = len(out) - MIN_REGIONS
    for region in out:
        last = merged[-1] if merged else None
        if (
            excess > 0
            and last is not None
            and last.stable >= STABLE_CHECKS
            and region.stable >= STABLE_CHECKS
        ):
            merged[-1] = Region(
                last.first,
                last.count + region.count,
                last.cache + region.cache,
                last.dirty + region.dirty,
                min(last.stable, region.stable),
            )
            excess -= 1
        else:
            merged.append(region)
    return merged
