"""cached_first: every file once, cached files first, on real files and the real page cache."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from pagecache import cached, read_pages, write_clean

import aioduet
from aioduet import Event, _kernel
from aioduet.tasks import CachedFile, cached_first, walk_files

BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
pytestmark = pytest.mark.anyio

PAGES = 8


def _tree(root: Path, count: int) -> list[Path]:
    """``count`` evicted files of PAGES pages spread over a few directories, in path order."""
    files = [write_clean(root / f"d{i % 3}" / f"f{i:03d}", PAGES) for i in range(count)]
    return sorted(files, key=lambda p: (str(p.parent), p.name))


async def _pending(task: aioduet.Task, pages: int, warm: Sequence[Path] = ()) -> None:
    """Wait (bounded) until the task holds ``pages`` unfetched pages: the items are there.

    ``warm`` files are read again every second meanwhile: the machine's DAMON daemon may
    evict a page of one, and its item then comes again. A timeout says what was cached.
    """
    with anyio.move_on_after(20) as waited:
        for attempt in itertools.count(1):
            if task.statistics().pending_pages >= pages:
                return
            if attempt % 100 == 0:
                for path in warm:
                    read_pages(path)
            await anyio.sleep(0.01)
    assert not waited.cancelled_caught, (
        f"{task.statistics().pending_pages} pages pending after 20 s, not {pages};"
        f" cached pages of the warm files: {[cached(p) for p in warm]}"
    )


async def _all(files: aioduet.tasks.CachedFirst) -> list[CachedFile]:
    return [f async for f in files]


@BACKENDS
async def test_cached_files_come_first_then_the_order(ext4_dir: Path) -> None:
    tree = _tree(ext4_dir, 12)
    warm = [tree[9], tree[4]]
    read_pages(warm[0])  # all 8 pages
    read_pages(warm[1], 0, 4)  # half of them
    async with (
        aioduet.open_duet() as duet,
        duet.register("first", Event.EXISTS, ext4_dir) as task,
    ):
        await task.wait_scanned()
        await _pending(task, PAGES + 4)
        picks = cached_first(task)
        first = await picks.__anext__()
        second = await picks.__anext__()
        assert [first.path, second.path] == [str(p) for p in warm]
        assert first.cached == 1.0 and second.cached == 0.5
        # A file read now, while the tool works, is picked next: it is the most cached.
        late = tree[11]
        read_pages(late)
        await _pending(task, PAGES)
        third = await picks.__anext__()
        assert third.path == str(late)
        rest = await _all(picks)
    expected = [str(p) for p in tree if p not in (*warm, late)]
    assert [f.path for f in rest] == expected  # the order, each once
    assert picks.total == 12 and picks.picked == 12 and picks.from_cache == 3


@BACKENDS
async def test_picked_files_are_done_and_get_no_more_items(ext4_dir: Path) -> None:
    tree = _tree(ext4_dir, 3)
    async with (
        aioduet.open_duet() as duet,
        duet.register("done", Event.EXISTS, ext4_dir) as task,
    ):
        await task.wait_scanned()
        picked = await _all(cached_first(task, order=map(str, tree[:2])))
        assert [f.path for f in picked] == [str(tree[0]), str(tree[1])]
        for f in picked:
            assert await task.check_done(f.uuid)
            assert f.uuid.ino == os.stat(f.path).st_ino and f.size == PAGES * _kernel.PAGE_SIZE
        assert not await task.check_done(aioduet.Uuid.from_stat(os.stat(tree[2])))
        read_pages(tree[0])
        read_pages(tree[2])  # not picked: its items come, the done file's do not
        await _pending(task, PAGES)
        items = task.fetch_nowait(100)
        assert {i.uuid.ino for i in items} == {os.stat(tree[2]).st_ino}


@BACKENDS
async def test_an_order_defines_the_files_and_their_sequence(ext4_dir: Path) -> None:
    tree = _tree(ext4_dir, 6)
    os.link(tree[0], ext4_dir / "hardlink")
    gone = tree[5]
    order = [str(p) for p in reversed(tree)] + [str(ext4_dir / "hardlink"), str(ext4_dir)]
    async with (
        aioduet.open_duet() as duet,
        duet.register("ordered", Event.EXISTS, ext4_dir) as task,
    ):
        await task.wait_scanned()
        picks = cached_first(task, order=order)
        os.unlink(tree[4])  # deleted before it was probed: skipped, no error
        first = await picks.__anext__()
        assert first.path == str(tree[5])
        rest = await _all(picks)
    assert picks.vanished == []  # gone before the order was read: not part of it
    paths = [first.path] + [f.path for f in rest]
    assert paths == [str(p) for p in reversed(tree) if p != tree[4]]
    assert str(gone) == paths[0]
    assert str(ext4_dir / "hardlink") not in paths  # tree[0]'s inode: visited once, first path


@BACKENDS
async def test_files_deleted_before_their_probe_are_skipped_and_counted(ext4_dir: Path) -> None:
    tree = [write_clean(ext4_dir / f"f{i:03d}", 1) for i in range(70)]  # two probe batches
    async with (
        aioduet.open_duet("scan") as duet,
        duet.register("vanish", Event.EXISTS, ext4_dir) as task,
    ):
        picks = cached_first(task)
        first = await picks.__anext__()
        os.unlink(tree[68])  # in the second batch of probes
        rest = await _all(picks)
    assert picks.vanished == [str(tree[68])]
    assert [first.path] + [f.path for f in rest] == [str(p) for p in tree if p != tree[68]]


@BACKENDS
async def test_revisit_picks_files_dirtied_after_their_pick_once_more(ext4_dir: Path) -> None:
    tree = _tree(ext4_dir, 3)
    mask = Event.EXISTS | Event.MODIFIED
    async with (
        aioduet.open_duet() as duet,
        duet.register("revisit", mask, ext4_dir) as task,
    ):
        await task.wait_scanned()
        picks = cached_first(task, revisit=True)
        first = await picks.__anext__()
        assert not first.revisit
        fd = os.open(first.path, os.O_WRONLY)
        os.pwrite(fd, b"changed", 0)
        os.close(fd)
        await _pending(task, 1)
        rest = await _all(picks)
    assert [f.path for f in rest] == [str(tree[1]), str(tree[2]), first.path]
    assert [f.revisit for f in rest] == [False, False, True]


@BACKENDS
async def test_bad_arguments_are_refused(ext4_dir: Path) -> None:
    async with aioduet.open_duet("scan") as duet:
        async with duet.register("added", Event.ADDED, ext4_dir) as task:
            with pytest.raises(ValueError, match=r"Event\.EXISTS"):
                cached_first(task)
        async with duet.register("exists", Event.EXISTS, ext4_dir) as task:
            with pytest.raises(ValueError, match="MODIFIED"):
                cached_first(task, revisit=True)
            with pytest.raises(TypeError, match="single str"):
                cached_first(task, order=str(ext4_dir))
            with pytest.raises(ValueError, match="absolute"):
                await _all(cached_first(task, order=["relative/path"]))


def test_walk_files_is_sorted_and_stays_on_the_filesystem(ext4_dir: Path) -> None:
    files = _tree(ext4_dir, 5)
    (ext4_dir / "link").symlink_to(files[0])
    (ext4_dir / "d0" / "a-sub").mkdir()  # sorts before the files of d0: visited first
    (ext4_dir / "d0" / "a-sub" / "z").write_bytes(b"z")
    walked = list(walk_files(str(ext4_dir)))
    assert walked == sorted(walked, key=lambda p: p.split("/"))
    assert set(walked) == {*map(str, files), str(ext4_dir / "d0" / "a-sub" / "z")}


@BACKENDS
async def test_batches_hold_the_same_picks_within_their_limits(ext4_dir: Path) -> None:
    tree = _tree(ext4_dir, 20)
    warm = [tree[i] for i in (2, 5, 7, 8, 11, 13)]  # equally cached: taken in path order
    for path in warm:
        read_pages(path)
    size = PAGES * _kernel.PAGE_SIZE
    async with (
        aioduet.open_duet() as duet,
        duet.register("batches", Event.EXISTS, ext4_dir) as task,
    ):
        await task.wait_scanned()
        await _pending(task, len(warm) * PAGES, warm)
        picks = cached_first(task)
        by_count = await picks.take(max_files=2)
        by_bytes = await picks.take(max_bytes=2 * size + 1)  # the third file crosses it
        # The last cached file, then the first one to read from the device ends the batch.
        by_device = await picks.take()
        rest = [batch async for batch in picks.batches(max_files=5)]
        assert await picks.take() == []  # the end: empty, not an error
    assert [len(b) for b in (by_count, by_bytes, by_device)] == [2, 3, 2]
    assert [f.cached for f in by_device] == [1.0, 0.0]
    assert [len(batch) for batch in rest] == [1] * (len(tree) - len(warm) - 1)
    paths = [f.path for batch in (by_count, by_bytes, by_device, *rest) for f in batch]
    assert paths == [str(p) for p in warm] + [str(p) for p in tree if p not in warm]


@BACKENDS
async def test_batches_refuse_empty_limits(ext4_dir: Path) -> None:
    async with (
        aioduet.open_duet() as duet,
        duet.register("limits", Event.EXISTS, ext4_dir) as task,
    ):
        picks = cached_first(task)
        with pytest.raises(ValueError, match="max_files"):
            await picks.take(max_files=0)
        with pytest.raises(ValueError, match="max_bytes"):
            picks.batches(max_bytes=-1)
