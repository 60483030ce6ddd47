"""The task API end to end, on real ext4 files and the real page cache.

Every test here runs on asyncio, asyncio+uvloop and trio (see ``anyio_backend`` in conftest).
A system DAMON daemon evicts idle page cache within about a minute on this machine kind, so
each test reads data right before waiting for items, and tolerates extra REMOVED items.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import pytest
from frameworks import Frameworks
from pagecache import cached, evict, read_pages, uuid_of, write_clean
from taskitems import collect, pages

import aioduet
from aioduet import Bmap, Event, Item, Uuid, _kernel

pytestmark = pytest.mark.anyio

INTERVAL = 0.05


def fincore_pages(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--noheadings", "--output", "PAGES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[0])


async def test_read_yields_added_pages_equal_to_cachestat(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    data = write_clean(ext4_dir / "data", 64)
    uuid = uuid_of(data)
    async with (
        frameworks.open(interval=INTERVAL) as duet,
        duet.register("reader", Event.ADDED, ext4_dir) as task,
    ):
        await task.wait_scanned()
        now_cached = read_pages(data)
        assert now_cached == fincore_pages(data) == 64  # two oracles agree first
        items = await collect(task, lambda got: len(pages(got, uuid, Event.ADDED)) >= now_cached)
        assert pages(items, uuid, Event.ADDED) == set(range(64))
        assert all(item.state == Event.ADDED for item in items)  # mask ADDED: nothing else
        assert await task.get_path(uuid) == str(data)


async def test_evicting_yields_removed_for_exactly_those_pages(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    data = write_clean(ext4_dir / "data", 64)
    uuid = uuid_of(data)
    async with (
        frameworks.open(interval=INTERVAL) as duet,
        duet.register("evictions", Event.ADDED | Event.REMOVED, ext4_dir) as task,
    ):
        await task.wait_scanned()
        assert read_pages(data, 8, 16) == 16
        await collect(task, lambda got: pages(got, uuid, Event.ADDED) >= set(range(8, 24)))
        evict(data)
        assert cached(data) == 0
        items = await collect(task, lambda got: len(pages(got, uuid, Event.REMOVED)) >= 16)
        assert pages(items, uuid, Event.REMOVED) == set(range(8, 24))


async def test_write_yields_dirty_and_fsync_flushed(frameworks: Frameworks, ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 32)
    uuid = uuid_of(data)
    async with (
        frameworks.open(interval=INTERVAL) as duet,
        duet.register("writes", Event.DIRTY | Event.FLUSHED, ext4_dir) as task,
    ):
        await task.wait_scanned()
        fd = os.open(data, os.O_WRONLY)
        try:
            os.pwrite(fd, b"x" * _kernel.PAGE_SIZE, 5 * _kernel.PAGE_SIZE)
            dirty = await collect(task, lambda got: 5 in pages(got, uuid, Event.DIRTY))
            assert all(item.state == Event.DIRTY for item in dirty)
            os.fsync(fd)
            assert _kernel.cachestat(fd).dirty == 0
            flushed = await collect(task, lambda got: 5 in pages(got, uuid, Event.FLUSHED))
            assert pages(flushed, uuid, Event.FLUSHED) == pages(dirty, uuid, Event.DIRTY)
        finally:
            os.close(fd)


async def test_state_based_cancels_and_event_based_accumulates(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    """Added then evicted before a fetch: nothing for EXISTS, one ADDED|REMOVED item otherwise."""
    data = write_clean(ext4_dir / "data", 16)
    uuid = uuid_of(data)
    async with frameworks.open(interval=INTERVAL) as duet:
        exists = await duet.register("exists", Event.EXISTS, ext4_dir)
        events = await duet.register("events", Event.ADDED | Event.REMOVED, ext4_dir)
        probe = await duet.register("probe", Event.ADDED | Event.REMOVED, ext4_dir)
        for task in (exists, events, probe):
            await task.wait_scanned()
        read_pages(data)
        await collect(probe, lambda got: len(pages(got, uuid, Event.ADDED)) == 16)
        evict(data)
        await collect(probe, lambda got: len(pages(got, uuid, Event.REMOVED)) == 16)
        # The store held ADDED for both tasks before the eviction arrived.
        assert [item for item in await exists.poll() if item.uuid == uuid] == []
        merged = [item for item in await events.poll() if item.uuid == uuid]
        assert merged == [Item(uuid, 0, 16, Event.ADDED | Event.REMOVED)]


async def test_modified_cancels_dirty_then_flushed(frameworks: Frameworks, ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 16)
    uuid = uuid_of(data)
    async with frameworks.open(interval=INTERVAL) as duet:
        modified = await duet.register("modified", Event.MODIFIED, ext4_dir)
        probe = await duet.register("probe", Event.DIRTY | Event.FLUSHED, ext4_dir)
        await modified.wait_scanned()
        await probe.wait_scanned()
        fd = os.open(data, os.O_WRONLY)
        try:
            os.pwrite(fd, b"y" * _kernel.PAGE_SIZE, 2 * _kernel.PAGE_SIZE)
            await collect(probe, lambda got: 2 in pages(got, uuid, Event.DIRTY))
            os.fsync(fd)
        finally:
            os.close(fd)
        await collect(probe, lambda got: 2 in pages(got, uuid, Event.FLUSHED))
        assert [item for item in await modified.poll() if item.uuid == uuid] == []


async def test_overlapping_tasks_see_their_own_items_once(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    a, ab, other = ext4_dir / "a", ext4_dir / "ab", ext4_dir / "other"
    in_a = write_clean(a / "sub" / "f", 8)
    in_ab = write_clean(ab / "g", 4)
    other.mkdir()
    ua, uab = uuid_of(in_a), uuid_of(in_ab)
    async with frameworks.open(interval=INTERVAL) as duet:
        whole = await duet.register("whole", Event.EXISTS, ext4_dir)
        only_a = await duet.register("a", Event.EXISTS, a)
        unrelated = await duet.register("other", Event.EXISTS, other)
        for task in (whole, only_a, unrelated):
            await task.wait_scanned()
        read_pages(in_a)
        read_pages(in_ab)
        seen = await collect(
            whole,
            lambda got: (
                len(pages(got, ua, Event.ADDED)) == 8 and len(pages(got, uab, Event.ADDED)) == 4
            ),
        )
        mine = await collect(only_a, lambda got: len(pages(got, ua, Event.ADDED)) == 8)
        mine += await only_a.poll()
        # Exactly once: no page of the file comes twice as ADDED.
        added = [p for item in mine if item.state & Event.ADDED for p in item.pages]
        assert sorted(added) == list(range(8))
        assert {item.uuid for item in mine} == {ua}  # /d/a never gets /d/ab's items
        assert {item.uuid for item in seen} == {ua, uab}
        assert await unrelated.poll() == []
        with pytest.raises(aioduet.NotFound):
            await only_a.get_path(uab)
        assert await whole.get_path(uab) == str(in_ab)


async def test_bmap_set_stops_reset_resumes_check_answers(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    done = write_clean(ext4_dir / "in" / "done", 8)
    outside = write_clean(ext4_dir / "out" / "x", 1)
    ud, uo = uuid_of(done), uuid_of(outside)
    async with frameworks.open(interval=INTERVAL) as duet:
        task = await duet.register("bmap", Event.ADDED | Event.REMOVED, ext4_dir / "in")
        probe = await duet.register("probe", Event.ADDED | Event.REMOVED, ext4_dir)
        await task.wait_scanned()
        assert await task.check_done(ud) is False
        assert await task.bmap(Bmap.SET, ud) is True
        assert await task.check_done(ud) is True
        read_pages(done)
        read_pages(outside)
        await collect(
            probe,
            lambda got: (
                len(pages(got, ud, Event.ADDED)) == 8 and len(pages(got, uo, Event.ADDED)) == 1
            ),
        )
        assert [item for item in await task.poll() if item.uuid == ud] == []
        # irrelevant: known to the framework, outside the task's directory
        assert await task.check_done(uo) is True
        assert await task.bmap(Bmap.RESET, ud) is False
        evict(done)
        items = await collect(task, lambda got: len(pages(got, ud, Event.REMOVED)) == 8)
        assert pages(items, ud, Event.REMOVED) == set(range(8))
        with pytest.raises(ValueError, match="exactly one"):
            await task.bmap(Bmap.SET | Bmap.CHECK, ud)


async def test_registration_scan_reports_what_was_cached_before(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    clean = write_clean(ext4_dir / "clean", 16)
    dirty = write_clean(ext4_dir / "dirty", 16)
    uc, ud = uuid_of(clean), uuid_of(dirty)
    fd = os.open(dirty, os.O_WRONLY)
    try:
        os.pwrite(fd, b"z" * _kernel.PAGE_SIZE, 3 * _kernel.PAGE_SIZE)
        read_pages(clean, 0, 10)
        async with frameworks.open(interval=60) as duet:  # no pass: the scan alone
            task = await duet.register("late", Event.ADDED | Event.DIRTY, ext4_dir)
            await task.wait_scanned()
            items = await task.poll(1000)
            now = cached(clean)
            assert len(pages(items, uc, Event.ADDED)) == now == 10
            assert 3 in pages(items, ud, Event.ADDED)
            # Dirty still, so dirty during the scan (heavy I/O elsewhere may write it back
            # before the scan; dirty_expire_centisecs leaves it dirty 30 s otherwise).
            runs = _kernel.page_runs(fd, 16 * _kernel.PAGE_SIZE, "dirty")
            if any(first <= 3 < first + count for first, count in runs):
                assert 3 in pages(items, ud, Event.DIRTY)
            assert task.statistics().scanning is False
    finally:
        os.close(fd)


async def test_iteration_ends_when_the_task_or_framework_closes(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    async with frameworks.open(interval=INTERVAL) as duet:
        task = await duet.register("iter", Event.EXISTS, ext4_dir)
        got: list[Item] = []

        async def consume() -> None:
            async for item in task:
                got.append(item)

        async with anyio.create_task_group() as group:
            group.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            await task.aclose()
        assert got == []
        with pytest.raises(anyio.ClosedResourceError):
            task.fetch_nowait()
        assert (await duet.status()).tasks == ()
        other = await duet.register("after-close", Event.EXISTS, ext4_dir)
    assert not duet.running
    with pytest.raises(anyio.EndOfStream):
        await other.fetch()
    assert [item async for item in other] == []


async def test_cancelled_consumer_releases_its_task(frameworks: Frameworks, ext4_dir: Path) -> None:
    async with frameworks.open(interval=INTERVAL) as duet:
        async with anyio.create_task_group() as group:

            async def consume() -> None:
                async with duet.register("cancelled", Event.EXISTS, ext4_dir) as task:
                    async for _ in task:
                        pass

            group.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert len((await duet.status()).tasks) == 1
            group.cancel_scope.cancel()
        status = await duet.status()
        assert status.tasks == ()
        assert frameworks.embedded.store.active_slots == 0


async def test_status_lists_tasks_sources_and_store(frameworks: Frameworks, ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 4)
    async with frameworks.open("scan", interval=INTERVAL, max_tasks=3) as duet:
        task = await duet.register("listed", Event.ADDED, ext4_dir)
        await task.wait_scanned()
        read_pages(data)
        await collect(task, lambda got: len(got) >= 1)
        status = await duet.status()
        assert status.running and status.max_tasks == 3
        (listed,) = status.tasks
        assert (listed.id, listed.name, listed.mask, listed.path) == (
            task.id,
            "listed",
            Event.ADDED,
            str(ext4_dir),
        )
        assert listed.statistics.items_delivered >= 1
        sources = {source.name: source for source in status.sources}
        assert list(sources) == ["inotify", "residency", "writeback"]
        assert all(source.active for source in sources.values())
        residency = sources["residency"]
        assert residency.observations >= 1
        assert residency.budget is not None and residency.budget_used >= 0
        assert sources["inotify"].observations >= 1  # the read was an inotify event
        assert status.store.files >= 1
    assert not (await duet.status()).running


async def test_tasks_registered_back_to_back_hear_of_each_page_once(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    """A pass that sees a change while registration scans still run must not double it."""
    data = write_clean(ext4_dir / "data", 64)
    uuid = uuid_of(data)
    async with frameworks.open(interval=INTERVAL) as duet:
        tasks = [await duet.register(name, Event.EXISTS, ext4_dir) for name in "abc"]
        read_pages(data)
        for task in tasks:
            items = await collect(task, lambda got: len(pages(got, uuid, Event.ADDED)) == 64)
            await task.wait_scanned()
            items += await task.poll(1000)
            added = [p for i in items if i.uuid == uuid and i.state & Event.ADDED for p in i.pages]
            assert sorted(added) == list(range(64)), task.name


async def test_closed_tasks_answer_nothing_and_unknown_files_cost_nothing(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    async with frameworks.open(interval=INTERVAL) as duet:
        task = await duet.register("closing", Event.EXISTS, ext4_dir)
        stranger = Uuid(1, 2, 3)
        assert await task.check_done(stranger) is False  # unknown: relevant, not done
        assert frameworks.embedded.store.keys_of(1, 2) == []  # ... and nothing was remembered
        await task.aclose()
        for call in (task.get_path, task.check_done):
            with pytest.raises(anyio.ClosedResourceError):
                await call(stranger)


async def test_overflow_items_carry_the_root_uuid_with_its_generation(
    frameworks: Frameworks, ext4_dir: Path
) -> None:
    async with frameworks.open(interval=INTERVAL) as duet:
        task = await duet.register("overflow", Event.EXISTS, ext4_dir)
        frameworks.embedded.store.signal_overflow(frameworks.embedded.store.active_slots)
        (item,) = await task.poll()
        fd = os.open(ext4_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            root = Uuid.from_stat(os.fstat(fd), _kernel.inode_generation(fd))
        finally:
            os.close(fd)
        assert item == Item(root, 0, 0, Event.OVERFLOW)
        assert await task.get_path(item.uuid) == str(ext4_dir)
