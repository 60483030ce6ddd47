"""The tracepoints source on the real kernel: ext4 files under /tmp, cachestat as the oracle."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from pagecache import opened, read_pages, uuid_of, write_clean

from aioduet import Event, _kernel
from aioduet._paths import PathIndex
from aioduet.sources import Sink
from aioduet.sources import _tracefs as tf
from aioduet.sources.tracepoints import TracepointSource, _bdi_name
from aioduet.store import Store

pytestmark = [pytest.mark.anyio, pytest.mark.kernel]
ALL = Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the kernel does the same whatever the loop; one backend keeps it fast


class Recorder:
    """A source over a store with one always-relevant slot, and per-page state of one file."""

    def __init__(self, **options: object) -> None:
        self.index = PathIndex()
        self.changed = anyio.Event()
        self.store = Store(2, relevance=lambda key, slot: True, notify=self._notify)
        self.slot = self.store.add_slot(ALL)
        self.losses = 0
        self.sink = Sink(self.store, self.index, overflow=self._overflow)
        self.source = TracepointSource(self.sink, **options)  # type: ignore[arg-type]
        self.pages: dict[int, int] = {}

    def _notify(self, slots: int) -> None:
        self.changed.set()

    def _overflow(self, root: str | None) -> None:
        self.losses += 1
        self.changed.set()

    def know(self, path: Path) -> tuple[int, int, int]:
        st = path.stat()
        self.index.add(st.st_dev, st.st_ino, str(path))
        return uuid_of(path).dev, uuid_of(path).ino, uuid_of(path).gen

    def reset(self) -> None:
        self.store.drain(self.slot, 1 << 30)
        self.pages.clear()

    async def wait(self, key: tuple[int, int, int], done: Callable[[], bool], t: float) -> None:
        """Collect the file's page states until ``done()`` (at most ``t`` seconds)."""
        with anyio.fail_after(t):
            while True:
                for k, first, count, state in self.store.drain(self.slot, 1 << 30):
                    if k[:2] == key[:2]:
                        assert k == key, "generation resolved from the path index"
                        for page in range(first, first + count):
                            self.pages[page] = self.pages.get(page, 0) | state
                if done():
                    return
                self.changed = anyio.Event()
                await self.changed.wait()

    def with_bit(self, bit: Event) -> set[int]:
        return {p for p, s in self.pages.items() if s & bit}


@pytest.fixture
async def rec(ext4_dir: Path) -> AsyncIterator[Recorder]:
    recorder = Recorder()
    recorder.source.add_scope(str(ext4_dir))
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.source.run)
        yield recorder
        tg.cancel_scope.cancel()


def _dirty_pages(path: Path) -> set[int]:
    size = _kernel.PAGE_SIZE
    with opened(path) as fd:
        pages = os.fstat(fd).st_size // size
        return {p for p in range(pages) if _kernel.cachestat(fd, p * size, size).dirty}


async def test_read_then_dontneed(rec: Recorder, ext4_dir: Path) -> None:
    path = write_clean(ext4_dir / "big", 16384)  # 64 MiB, evicted
    key = rec.know(path)
    rec.reset()
    assert read_pages(path) == 16384
    await rec.wait(key, lambda: len(rec.with_bit(Event.ADDED)) >= 16384, 30)
    assert rec.with_bit(Event.ADDED) == set(range(16384))
    rec.reset()
    with opened(path) as fd:
        _kernel.evict(fd)
        assert _kernel.cachestat(fd).cache == 0
    await rec.wait(key, lambda: len(rec.with_bit(Event.REMOVED)) >= 16384, 30)
    assert rec.with_bit(Event.REMOVED) == set(range(16384))
    assert rec.losses == 0
    assert rec.source.status().observations > 0


async def test_write_dirty_then_fsync_flushed(rec: Recorder, ext4_dir: Path) -> None:
    path = write_clean(ext4_dir / "w", 256)
    key = rec.know(path)
    read_pages(path)  # cached while the source runs: it learns the folios' orders
    fd = os.open(path, os.O_WRONLY)
    try:
        await rec.wait(key, lambda: len(rec.with_bit(Event.ADDED)) >= 256, 30)
        rec.reset()
        os.pwrite(fd, b"y" * (3 * _kernel.PAGE_SIZE), 40 * _kernel.PAGE_SIZE)
        truth = _dirty_pages(path)  # whole folios turn dirty: the oracle says which
        assert {40, 41, 42} <= truth
        await rec.wait(key, lambda: rec.with_bit(Event.DIRTY) >= truth, 10)
        assert rec.with_bit(Event.DIRTY) == truth
        rec.reset()
        os.fsync(fd)
        assert _dirty_pages(path) == set()
        await rec.wait(key, lambda: rec.with_bit(Event.FLUSHED) >= truth, 10)
        assert rec.with_bit(Event.FLUSHED) == truth
    finally:
        os.close(fd)


async def test_tiny_buffer_flood_signals_loss(ext4_dir: Path) -> None:
    recorder = Recorder(buffer_kb=4, drain_interval=5.0)
    recorder.source.add_scope(str(ext4_dir))
    path = write_clean(ext4_dir / "flood", 4096)
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.source.run)
        read_pages(path)  # POSIX_FADV_RANDOM: one order-0 folio, one event, per page
        with anyio.fail_after(20):
            while not recorder.losses:
                recorder.changed = anyio.Event()
                await recorder.changed.wait()
        tg.cancel_scope.cancel()
    status = recorder.source.status()
    assert status.overflows >= 1
    assert status.lost >= 1


@pytest.mark.parametrize(
    "anyio_backend", ["asyncio", ("asyncio", {"use_uvloop": True}), "trio"], indirect=False
)
async def test_instance_removed_on_cancellation(anyio_backend: object, ext4_dir: Path) -> None:
    recorder = Recorder()
    recorder.source.add_scope(str(ext4_dir))
    async with anyio.create_task_group() as tg:
        await tg.start(recorder.source.run)
        instance = recorder.source.instance
        assert instance is not None
        name = os.path.basename(instance.path)
        assert name in os.listdir(f"{tf.TRACEFS}/instances")
        filt = f"{instance.path}/events/filemap/mm_filemap_add_to_page_cache/filter"
        with open(filt) as f:  # noqa: ASYNC230 - a tracefs file, answered at once
            assert f"s_dev == {tf.kernel_dev(os.stat(ext4_dir).st_dev)}" in f.read()
        tg.cancel_scope.cancel()
    assert name not in os.listdir(f"{tf.TRACEFS}/instances")
    assert recorder.source.instance is None
    assert not recorder.source.status().active


async def test_damon_evictions_appear_as_removed(rec: Recorder, ext4_dir: Path) -> None:
    """Slow (up to ~2 min): the system's kdamond pages out an idle file by itself."""
    path = write_clean(ext4_dir / "idle", 4096)  # 16 MiB
    key = rec.know(path)
    read_pages(path)
    await rec.wait(key, lambda: len(rec.with_bit(Event.ADDED)) >= 4096, 30)
    rec.reset()
    await rec.wait(key, lambda: bool(rec.with_bit(Event.REMOVED)), 150)
    with opened(path) as fd:
        assert _kernel.cachestat(fd).cache < 4096


def test_bdi_names_of_block_and_anonymous_devices(tmp_path: Path) -> None:
    # A fake sysfs: a partition 8:1 of disk 8:0, and FUSE's anonymous device 0:39 with a bdi
    # of its own (the name its writeback events carry); 0:40 has none (tmpfs, for one).
    (tmp_path / "class" / "bdi" / "8:0").mkdir(parents=True)
    (tmp_path / "class" / "bdi" / "0:39").mkdir()
    disk = tmp_path / "devices" / "sda"
    (disk / "sda1").mkdir(parents=True)
    (disk / "bdi").symlink_to(tmp_path / "class" / "bdi" / "8:0")
    (tmp_path / "dev" / "block").mkdir(parents=True)
    (tmp_path / "dev" / "block" / "8:1").symlink_to(disk / "sda1")
    assert _bdi_name(os.makedev(8, 1), str(tmp_path)) == "8:0"
    assert _bdi_name(os.makedev(0, 39), str(tmp_path)) == "0:39"
    assert _bdi_name(os.makedev(0, 40), str(tmp_path)) is None


def test_writeback_events_of_a_bdi_no_scope_has_are_not_credited_to_a_named_scope(
    ext4_dir: Path,
) -> None:
    source = TracepointSource(Sink(Store(1), PathIndex()))
    source.add_scope(str(ext4_dir))
    source.filters()  # learns the scope's bdi name
    dev = os.stat(ext4_dir).st_dev
    own = _bdi_name(dev)
    assert own is not None
    assert source._dev_of_bdi(own.encode(), 12) == tf.kernel_dev(dev)
    # Another device's events (a FUSE server writing to its backing disk, say): not ours.
    assert source._dev_of_bdi(b"no-such-bdi", 12) is None
