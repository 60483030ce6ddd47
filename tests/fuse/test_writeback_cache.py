"""Page-cache events on a FUSE mount, with and without FUSE's write-back cache.

Each test mounts ``passthrough.py`` (see conftest) over a fresh ext4 directory and registers a
task for the mount. With the write-back cache a write leaves dirty pages in the FUSE inode's
page cache until fsync or background writeback (REFERENCE.md section 3); without it every
write goes straight to the server and no page is ever dirty. ``cachestat`` on the writer's own
fd is the oracle: on a write-back-cache mount *closing any fd of a file, or unmapping it, writes
its dirty pages back* (``fuse_flush`` and ``fuse_vma_close`` call ``write_inode_now``), so the
tests keep one fd open per file and open no other one while pages should stay dirty. The
framework does open, map and close the files it checks: the tests marked xfail pin down what
that does to the events (the reasons below).

A system DAMON daemon evicts idle page cache within about a minute: REMOVED items are
tolerated everywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pagecache import opened, read_pages, uuid_of, write_clean
from taskitems import collect, pages

import aioduet
from aioduet import Event, Item, _kernel

pytestmark = pytest.mark.anyio

INTERVAL = 0.1
MASK = Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED
PAGE = _kernel.PAGE_SIZE
FILE_PAGES = 16
WRITTEN = set(range(4, 8))
"""The pages each test writes: a run in the middle of a file of FILE_PAGES pages."""
BACKGROUND_SECONDS = 60
"""Bound on background writeback: dirty_expire_centisecs (30 s) + a few flusher wake-ups (5 s)."""

# What the framework does on FUSE that these tests pin down (see the report of issue part 3).
OBSERVER_FLUSH_SCAN = (
    "scan set: a residency check of a known file maps it for mincore, munmaps it, bisects the "
    "dirty pages with cachestat, then closes it; on a FUSE write-back-cache mount munmap "
    "(fuse_vma_close) and close (fuse_flush) both write the dirty pages back (write_inode_now), "
    "so the check flushes the write before it looks for dirty pages: no DIRTY item at all"
)
OBSERVER_FLUSH_EXACT = (
    "exact set: the first tracepoint event of an inode resolves its generation by opening and "
    "closing a path of it (tracepoints._key_of -> _handles.generation_at), and on a FUSE "
    "write-back-cache mount that close() writes the dirty pages back"
)


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only: the loop backends are covered by the rest of the suite."""
    return "asyncio"


def dirty_pages(fd: int) -> set[int]:
    """The oracle: the dirty pages of the file, from ``cachestat`` on an fd already open."""
    runs = _kernel.page_runs(fd, os.fstat(fd).st_size, "dirty")
    return {page for first, count in runs for page in range(first, first + count)}


def write_pages(fd: int, which: set[int]) -> None:
    for page in sorted(which):
        os.pwrite(fd, b"w" * PAGE, page * PAGE)


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param("scan", marks=pytest.mark.xfail(strict=True, reason=OBSERVER_FLUSH_SCAN)),
        "exact",
    ],
)
async def test_write_is_dirty_until_fsync_flushes_it(sources: str, writeback_mount: Path) -> None:
    data = write_clean(writeback_mount / "data", FILE_PAGES)
    uuid = uuid_of(data)
    async with (
        aioduet.open_duet(sources, interval=INTERVAL) as duet,
        duet.register("fuse", MASK, writeback_mount) as task,
    ):
        await task.wait_scanned()
        # A read first, so that the write below is not the first event of the inode (the exact
        # set flushes on that one: test_first_event_of_a_file_leaves_its_pages_dirty).
        assert read_pages(data, 0, 4) >= 4
        await collect(task, lambda got: pages(got, uuid, Event.ADDED) >= {0, 1, 2, 3})
        with opened(data, os.O_RDWR) as fd:
            write_pages(fd, WRITTEN)
            assert dirty_pages(fd) == WRITTEN  # the write-back cache is on
            items = await collect(task, lambda got: pages(got, uuid, Event.DIRTY) >= WRITTEN)
            assert pages(items, uuid, Event.DIRTY) == WRITTEN
            assert dirty_pages(fd) == WRITTEN  # the framework looked, nothing wrote them back
            assert not pages(items, uuid, Event.FLUSHED) & WRITTEN
            os.fsync(fd)
            assert _kernel.cachestat(fd).dirty == _kernel.cachestat(fd).writeback == 0
            await collect(task, lambda got: pages(got, uuid, Event.FLUSHED) >= WRITTEN)


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param("scan", marks=pytest.mark.xfail(strict=True, reason=OBSERVER_FLUSH_SCAN)),
        "exact",
    ],
)
async def test_background_writeback_flushes_what_was_not_fsynced(
    sources: str, writeback_mount: Path
) -> None:
    """No fsync, no close: only the kernel's flusher writes the pages back (~30 s)."""
    data = write_clean(writeback_mount / "data", FILE_PAGES)
    uuid = uuid_of(data)
    async with (
        aioduet.open_duet(sources, interval=INTERVAL) as duet,
        duet.register("fuse", MASK, writeback_mount) as task,
    ):
        await task.wait_scanned()
        assert read_pages(data, 0, 4) >= 4  # as above: not the inode's first event
        await collect(task, lambda got: pages(got, uuid, Event.ADDED) >= {0, 1, 2, 3})
        with opened(data, os.O_RDWR) as fd:
            write_pages(fd, WRITTEN)
            await collect(task, lambda got: pages(got, uuid, Event.DIRTY) >= WRITTEN)
            assert dirty_pages(fd) == WRITTEN  # still dirty: no flush so far
            await collect(
                task,
                lambda got: pages(got, uuid, Event.FLUSHED) >= WRITTEN,
                seconds=BACKGROUND_SECONDS,
            )
            stat = _kernel.cachestat(fd)
            assert stat.dirty == stat.writeback == 0


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param("exact", marks=pytest.mark.xfail(strict=True, reason=OBSERVER_FLUSH_EXACT)),
    ],
)
async def test_first_event_of_a_file_leaves_its_pages_dirty(
    sources: str, writeback_mount: Path
) -> None:
    data = write_clean(writeback_mount / "data", FILE_PAGES)
    uuid = uuid_of(data)
    async with (
        aioduet.open_duet(sources, interval=INTERVAL) as duet,
        duet.register("fuse", MASK, writeback_mount) as task,
    ):
        await task.wait_scanned()
        with opened(data, os.O_RDWR) as fd:
            write_pages(fd, WRITTEN)
            assert dirty_pages(fd) == WRITTEN
            await collect(task, lambda got: pages(got, uuid, Event.DIRTY) >= WRITTEN)
            assert dirty_pages(fd) == WRITTEN
            os.fsync(fd)


@pytest.mark.parametrize("sources", ["scan", "exact"])
async def test_without_writeback_cache_writes_are_never_dirty(
    sources: str, writethrough_mount: Path
) -> None:
    data = write_clean(writethrough_mount / "data", FILE_PAGES)
    other = write_clean(writethrough_mount / "other", 4)
    uuid, other_uuid = uuid_of(data), uuid_of(other)
    async with (
        aioduet.open_duet(sources, interval=INTERVAL) as duet,
        duet.register("fuse", MASK, writethrough_mount) as task,
    ):
        await task.wait_scanned()
        items: list[Item] = []
        with opened(data, os.O_RDWR) as fd:
            write_pages(fd, WRITTEN)
            assert _kernel.cachestat(fd).dirty == 0  # written through to the server
            # Reads still give ADDED; the read of another file afterwards is the barrier
            # behind which any DIRTY of the write would have arrived.
            assert read_pages(data, 0, 4) >= 4
            items += await collect(task, lambda got: pages(got, uuid, Event.ADDED) >= {0, 1, 2, 3})
            assert read_pages(other) == 4
            items += await collect(task, lambda got: len(pages(got, other_uuid, Event.ADDED)) == 4)
            assert _kernel.cachestat(fd).dirty == 0
        assert [item for item in items if item.state & Event.DIRTY] == []
