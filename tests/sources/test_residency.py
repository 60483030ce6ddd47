"""The residency source on real files: scans, renames, deletions, unreadable files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest
from harness import Harness
from pagecache import make_tree, read_pages, uuid_of, write_clean
from taskitems import collect, has

import aioduet
import aioduet._paths
import aioduet.store
from aioduet import Event, _kernel

pytestmark = pytest.mark.anyio

INTERVAL = 0.05


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_registration_scan_is_incremental_on_a_large_tree(ext4_dir: Path) -> None:
    """Items of a big tree arrive while the scan is still running, in several batches."""
    tree = make_tree(ext4_dir / "tree", dirs=20, files=150, size=100)
    async with aioduet.open_duet("scan", interval=60) as duet:
        task = await duet.register("big", Event.EXISTS, tree)
        with anyio.fail_after(30):
            first = await task.fetch(10)
        assert first
        assert task.statistics().scanning, "items came only after the whole scan"
        await task.wait_scanned()
        items = first + task.fetch_nowait(10_000)
        files = {item.uuid for item in items if item.state & Event.ADDED}
        # DAMON may evict a few between writing and scanning; nearly all must be reported.
        assert len(files) >= 2900
        assert len(items) == len(files)  # one single-page item per file, no duplicates


async def test_renames_out_of_and_into_the_scope_are_honoured(ext4_dir: Path) -> None:
    inside, outside = ext4_dir / "in", ext4_dir / "out"
    leaving = write_clean(inside / "leaving", 4)
    coming = write_clean(outside / "coming", 4)
    ul, uc = uuid_of(leaving), uuid_of(coming)
    async with aioduet.open_duet("scan", interval=INTERVAL) as duet:
        task = await duet.register("scope", Event.EXISTS, inside)
        probe = await duet.register("probe", Event.EXISTS, ext4_dir)
        await task.wait_scanned()
        await probe.wait_scanned()
        read_pages(leaving)
        read_pages(coming)
        await collect(probe, lambda got: has(got, ul, Event.ADDED) and has(got, uc, Event.ADDED))
        mine = await collect(task, lambda got: has(got, ul, Event.ADDED))
        assert not has(mine, uc, Event.ADDED)
        assert await task.get_path(ul) == str(leaving)

        os.rename(leaving, outside / "left")
        os.rename(coming, inside / "came")
        # To the task, the pages of the file that left are gone, and those of the file that
        # came are new: its state-based view converges without anything being read again.
        mine = await collect(
            task, lambda got: has(got, ul, Event.REMOVED) and has(got, uc, Event.ADDED)
        )
        assert {p for item in mine if item.uuid == uc for p in item.pages} == set(range(4))
        with pytest.raises(aioduet.NotFound):
            await task.get_path(ul)
        assert await task.get_path(uc) == str(inside / "came")
        assert await task.check_done(ul) is True  # irrelevant now
        assert await task.check_done(uc) is False
        # The probe watches both directories: a rename inside its scope changes nothing.
        assert [i for i in probe.fetch_nowait() if i.uuid in (ul, uc) and i.count] == []


@pytest.mark.parametrize("sources", ["scan", "exact"])
async def test_deleted_files_are_reported_removed(ext4_dir: Path, sources: str) -> None:
    doomed = write_clean(ext4_dir / "doomed", 8)
    ud = uuid_of(doomed)
    async with aioduet.open_duet(sources, interval=INTERVAL) as duet:
        task = await duet.register("deletes", Event.ADDED | Event.REMOVED, ext4_dir)
        await task.wait_scanned()
        read_pages(doomed)
        await collect(task, lambda got: has(got, ud, Event.ADDED))
        doomed.unlink()
        items = await collect(task, lambda got: has(got, ud, Event.REMOVED))
        removed = {p for item in items if item.uuid == ud for p in item.pages}
        assert removed == set(range(8))
        with pytest.raises(aioduet.NotFound):
            await task.get_path(ud)


async def test_unreadable_files_are_unknown_never_cached(ext4_dir: Path) -> None:
    """A file the caller may not open counts as unknown; nothing is reported as cached."""
    secret = write_clean(ext4_dir / "secret", 4)
    read_pages(secret)
    os.chmod(secret, 0)  # open() fails
    # Readable but not writable: cachestat says EPERM, and mincore would claim every page
    # resident although the file was just evicted.
    write_clean(ext4_dir / "readonly", 4)
    os.chmod(ext4_dir, 0o755)
    script = f"""
import os, anyio, anyio._backends._asyncio, aioduet
from aioduet import Event
os.setgid(65534); os.setuid(65534)
async def main():
    async with aioduet.open_duet("scan", interval=60) as duet:
        task = await duet.register("nobody", Event.EXISTS, {str(ext4_dir)!r})
        await task.wait_scanned()
        items = task.fetch_nowait(100)
        status = await duet.status()
        residency = [s for s in status.sources if s.name == 'residency'][0]
        print(len(items), residency.unknown)
anyio.run(main)
"""
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert result.returncode == 0, result.stderr.decode()
    items, unknown = result.stdout.decode().split()
    assert (items, unknown) == ("0", "2")


async def test_a_change_that_keeps_every_count_is_found_by_the_verifying_pass(
    ext4_dir: Path,
) -> None:
    data = write_clean(ext4_dir / "data", 64)
    harness = Harness(ext4_dir, Event.ADDED | Event.REMOVED, verify_every=3)
    read_pages(data, 0, 1)
    await harness.source.scan_all()  # pass 1 sees page 0
    assert harness.drain() == [(0, 1, int(Event.ADDED))]
    fd = os.open(data, os.O_RDONLY)
    try:
        _kernel.evict(fd, 0, _kernel.PAGE_SIZE)  # evict page 0 ...
    finally:
        os.close(fd)
    read_pages(data, 40, 1)  # ... and cache page 40: one page cached, as before
    await harness.source.scan_all()  # pass 2: counts unchanged, file not mapped
    assert harness.drain() == []
    await harness.source.scan_all()  # pass 3 verifies
    assert harness.drain() == [(0, 1, int(Event.REMOVED)), (40, 1, int(Event.ADDED))]


async def test_dirty_pages_written_back_and_evicted_between_passes_are_flushed(
    ext4_dir: Path,
) -> None:
    data = write_clean(ext4_dir / "data", 8)
    harness = Harness(ext4_dir, Event.MODIFIED | Event.EXISTS)
    fd = os.open(data, os.O_WRONLY)
    try:
        os.pwrite(fd, b"d" * _kernel.PAGE_SIZE, 0)
        await harness.source.scan_all()
        assert harness.drain() == [(0, 1, int(Event.ADDED | Event.DIRTY))]
        os.fsync(fd)
        _kernel.evict(fd)
    finally:
        os.close(fd)
    await harness.source.scan_all()
    assert harness.drain() == [(0, 1, int(Event.REMOVED | Event.FLUSHED))]


async def test_a_dirty_page_mincore_misses_is_cached_and_later_removed(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # mincore counts a page only if its folio is up to date, and a partial write can leave a
    # dirty folio that is not (seen under floods). A dirty page is in the cache all the same:
    # the map must say so, or its eviction is never reported (bench/flood.py found views
    # left with a cached page the kernel no longer had).
    data = write_clean(ext4_dir / "data", 8)
    harness = Harness(ext4_dir, Event.MODIFIED | Event.EXISTS)
    real_mincore = _kernel.mincore

    def mincore_missing_page_3(fd: int, size: int, offset: int = 0) -> bytes:
        # ... and page 7 read in between cachestat and mincore: the counts agree.
        found = bytearray(real_mincore(fd, size, offset))
        if offset == 0 and len(found) > 7:
            found[3], found[7] = 0, 1
        return bytes(found)

    monkeypatch.setattr(_kernel, "mincore", mincore_missing_page_3)
    fd = os.open(data, os.O_WRONLY)
    try:
        os.pwrite(fd, b"d" * _kernel.PAGE_SIZE, 3 * _kernel.PAGE_SIZE)
        await harness.source.scan_all()
        assert harness.drain() == [(3, 1, int(Event.ADDED | Event.DIRTY)), (7, 1, int(Event.ADDED))]
        os.fsync(fd)
        _kernel.evict(fd)
    finally:
        os.close(fd)
    await harness.source.scan_all()
    assert harness.drain() == [
        (3, 1, int(Event.REMOVED | Event.FLUSHED)),
        (7, 1, int(Event.REMOVED)),
    ]


async def test_deleted_files_leave_the_store_once_drained(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 4)
    harness = Harness(ext4_dir, Event.EXISTS)
    read_pages(data)
    await harness.source.scan_all()
    assert harness.drain() == [(0, 4, int(Event.ADDED))]
    data.unlink()
    await harness.source.scan_all()
    assert harness.store.statistics().files == 1  # REMOVED still pending
    assert harness.drain() == [(0, 4, int(Event.REMOVED))]
    assert harness.store.statistics().files == 0
    assert len(harness.index) == 0


async def test_the_walk_stays_on_the_scope_filesystem(ext4_dir: Path) -> None:
    mounted = ext4_dir / "mnt"
    mounted.mkdir()
    await anyio.run_process(["mount", "-t", "tmpfs", "-o", "size=1m", "aioduet-test", mounted])
    try:
        (mounted / "on-tmpfs").write_bytes(b"t" * 8192)  # tmpfs pages are always cached
        local = write_clean(ext4_dir / "local", 2)
        read_pages(local)
        harness = Harness(ext4_dir, Event.EXISTS)
        await harness.source.scan_all()
        assert harness.drain() == [(0, 2, int(Event.ADDED))]
        assert harness.index.paths(*_dev_ino(local)) == (str(local),)
    finally:
        await anyio.run_process(["umount", mounted])


def _dev_ino(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


async def test_unknown_counts_distinct_files_as_of_the_last_pass(ext4_dir: Path) -> None:
    write_clean(ext4_dir / "a", 2)
    write_clean(ext4_dir / "b", 2)
    os.chmod(ext4_dir, 0o777)
    script = f"""
import os, anyio, anyio._backends._asyncio
from aioduet import Event
from aioduet._paths import PathIndex
from aioduet.sources import ResidencySource, Sink
from aioduet.store import Store
os.setgid(65534); os.setuid(65534)
async def main():
    source = ResidencySource(Sink(Store(2), PathIndex()))
    source.add_scope({str(ext4_dir)!r})
    counts = []
    for _ in range(3):
        await source.scan_all()
        counts.append(source.status().unknown)
    os.rename({str(ext4_dir / "b")!r}, {str(ext4_dir / "b-moved")!r})  # still unknown
    await source.scan_all()
    counts.append(source.status().unknown)
    print(*counts)
anyio.run(main)
"""
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["2", "2", "2", "2"]
