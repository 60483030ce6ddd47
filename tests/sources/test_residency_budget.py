"""The residency scan's budget: cost per round, the bounds it promises, hints, regions."""

from __future__ import annotations

import math
import os
from pathlib import Path

import anyio
import pytest
from harness import Harness
from pagecache import evict, opened, read_pages, write_clean

from aioduet import Event, _kernel
from aioduet.sources._regions import REGION_PAGES

pytestmark = pytest.mark.anyio

_REMOVED = int(Event.REMOVED)
_ADDED = int(Event.ADDED)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _empty_tree(root: Path, dirs: int, files: int) -> int:
    """``dirs`` x ``files`` one-byte files, nothing cached; returns the file count."""
    paths = []
    for d in range(dirs):
        sub = root / f"d{d:02}"
        sub.mkdir(parents=True)
        for f in range(files):
            paths.append(sub / f"f{f:03}")
            paths[-1].write_bytes(b"x")
    os.sync()  # written back: now fadvise can evict them
    for path in paths:
        evict(path)
    return len(paths)


async def test_each_round_stays_within_the_budget_and_a_walk_ends_within_its_bound(
    ext4_dir: Path,
) -> None:
    files = _empty_tree(ext4_dir / "tree", dirs=10, files=100)
    budget = 200
    harness = Harness(ext4_dir / "tree", Event.EXISTS, budget=budget)
    # Checking a file that is not cached costs 3 calls (open, cachestat, close); the walk
    # adds 2 per directory. Nothing is hot, so the walk gets the whole budget.
    bound = math.ceil((3 * files + 2 * 11) / budget) + 1
    rounds, total = 0, 0
    while harness.source.status().passes == 0:
        spent = await harness.source.scan_round()
        rounds += 1
        total += spent
        # One file's check cannot be cut short: a round may overrun by that much.
        assert spent <= budget + 8, spent
        assert rounds <= bound, f"no complete walk after {rounds} rounds (bound {bound})"
    assert total <= budget * rounds + 8
    assert rounds >= (3 * files) // budget  # really budgeted, not one pass per round
    status = harness.source.status()
    assert status.budget == budget and 0 < status.budget_used <= 1.05
    assert status.cycle_seconds is not None


async def test_an_eviction_in_a_hot_file_is_found_long_before_the_walk_ends(
    ext4_dir: Path,
) -> None:
    _empty_tree(ext4_dir / "tree", dirs=10, files=100)
    hot = [write_clean(ext4_dir / "tree" / f"hot{i}", 4) for i in range(5)]
    budget = 200
    harness = Harness(ext4_dir / "tree", Event.EXISTS, budget=budget)
    for path in hot:
        read_pages(path)
    await harness.source.scan_all()
    assert sorted(harness.drain()) == [(0, 4, _ADDED)] * 5
    passes = harness.source.status().passes
    evict(hot[2])
    # Five hot files cost 5 x 5 calls, within three quarters of the budget: the next round
    # (and the one after, should the eviction land mid-round) must see it.
    bound = math.ceil(5 * len(hot) / (0.75 * budget)) + 1
    seen: list[tuple[int, int, int]] = []
    for _ in range(bound):
        await harness.source.scan_round()
        seen += harness.drain()
        if seen:
            break
    assert seen == [(0, 4, _REMOVED)]
    assert harness.source.status().passes == passes  # found by the hot ring, not a walk


async def test_a_large_file_is_remapped_only_where_its_counts_moved(ext4_dir: Path) -> None:
    pages = 16 * REGION_PAGES
    big = write_clean(ext4_dir / "big", pages)
    harness = Harness(ext4_dir, Event.EXISTS, budget=100_000)
    read_pages(big)
    await harness.source.scan_round()
    assert harness.drain() == [(0, pages, _ADDED)]
    full_map = 3 + pages // 32
    with opened(big) as fd:
        _kernel.evict(fd, 5 * REGION_PAGES * _kernel.PAGE_SIZE, _kernel.PAGE_SIZE)
    spent = await harness.source.scan_round()
    assert harness.drain() == [(5 * REGION_PAGES, 1, _REMOVED)]
    # Eight regions of 2 * REGION_PAGES pages: eight cachestat calls, one window mapped.
    assert spent < full_map / 3, (spent, full_map)
    with opened(big) as fd:
        _kernel.evict(fd, 0, 3 * _kernel.PAGE_SIZE)
    await harness.source.scan_round()
    assert harness.drain() == [(0, 3, _REMOVED)]


async def test_hints_are_checked_promptly_outside_the_budget(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 4)
    moved = ext4_dir / "sub" / "moved"
    moved.parent.mkdir()
    harness = Harness(ext4_dir, Event.EXISTS, interval=3600)
    source = harness.source
    async with anyio.create_task_group() as group:
        await group.start(source.run)
        read_pages(data)
        source.check_paths([str(data)])
        assert await harness.next_items() == [(0, 4, _ADDED)]
        os.rename(data, moved)
        source.path_moved(str(data), str(moved))
        # Nothing is delivered for a rename within the scope, and the source has no event
        # for index updates: poll, within a bound.
        with anyio.fail_after(5):
            while harness.index.paths(*_dev_ino(moved)) != (str(moved),):  # noqa: ASYNC110
                await anyio.sleep(0.005)
        moved.unlink()
        source.path_gone(str(moved.parent))  # a whole directory gone
        assert await harness.next_items() == [(0, 4, _REMOVED)]
        assert len(harness.index) == 0
        group.cancel_scope.cancel()


async def test_a_rescan_maps_every_file_again(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 64)
    harness = Harness(ext4_dir, Event.EXISTS)
    read_pages(data, 0, 1)
    await harness.source.scan_all()
    assert harness.drain() == [(0, 1, _ADDED)]
    evict(data)
    read_pages(data, 40, 1)  # counts unchanged: only a full map can tell
    await harness.source.scan_round()
    assert harness.drain() == []
    harness.source.rescan(None)
    await harness.source.scan_round()
    assert sorted(harness.drain()) == [(0, 1, _REMOVED), (40, 1, _ADDED)]


def _dev_ino(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino
