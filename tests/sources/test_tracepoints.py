"""The tracepoints source on the real kernel: ext4 files under /tmp, cachestat as the oracle."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import anyio
import pytest
from pagecache import opened, read_pages, uuid_of, write_clean
from tracepages import ADD_FMT, DEL_FMT, HEADER, add, delete, page, record

from aioduet import Event, _kernel
from aioduet._paths import PathIndex
from aioduet.sources import Sink
from aioduet.sources import _tracefs as tf
from aioduet.sources import tracepoints as tp
from aioduet.sources.tracepoints import ADD, DELETE, TracepointSource, _bdi_name
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
    # The events of writing and evicting it may still be in a CPU's ring buffer: taken in
    # now, so that a REMOVED after the reset is the reclaim's.
    rec.sink.settle()
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


class Scripted:
    """A source fed hand-made records (no kernel): what it makes of a sequence of events."""

    DEV = 0xFE00  # st_dev of 254:0
    IDS: ClassVar[dict[str, int]] = {
        tp.ADD: 1,
        tp.DELETE: 2,
        tp.DIRTY: 3,
        tp.FREE: 4,
        tp.ALLOC: 5,
        tp.TRUNCATE: 6,
    }

    def __init__(self) -> None:
        self.gens: dict[int, int] = {}
        self.store = Store(1, relevance=lambda key, slot: True)
        self.slot = self.store.add_slot(ALL)
        self.source = TracepointSource(
            Sink(self.store, PathIndex()),
            resolve=lambda dev, ino: ("/f", self.gens[ino]) if ino in self.gens else None,
        )
        self.source._ids = dict(self.IDS)
        self.source._bdis = {b"254:0": [self.DEV]}
        self.kdev = tf.kernel_dev(self.DEV)

    def add(self, ino: int, index: int, order: int = 0) -> tuple[object, ...]:
        return (self.IDS[tp.ADD], ino, index, self.kdev, order)

    def delete(self, ino: int, index: int, order: int = 0) -> tuple[object, ...]:
        return (self.IDS[tp.DELETE], ino, index, self.kdev, order)

    def dirty(self, ino: int, index: int) -> tuple[object, ...]:
        return (self.IDS[tp.DIRTY], b"254:0", ino, index)

    def life(self, event: str, ino: int) -> tuple[object, ...]:
        return (self.IDS[event], self.kdev, ino)

    def handle(self, *records: tuple[object, ...]) -> list[tuple[int, int, int, int]]:
        """Items ``(gen, first, count, state)`` the records make, in the store's order."""
        self.source.handle(list(records))
        return [(k[2], f, c, s) for k, f, c, s in self.store.drain(self.slot, 1 << 30)]


def test_a_dirty_folio_inside_a_split_large_folio_is_one_page() -> None:
    # The dirty event has no order: the source uses the order the folio was added with. A
    # large folio split since (here: one page of it deleted) must not lend its order to a
    # piece (bench/flood.py found views with pages 24-31 cached that had gone).
    s = Scripted()
    s.gens[7] = 70
    d = int(Event.DIRTY)
    assert s.handle(s.add(7, 0, order=5)) == [(70, 0, 32, int(Event.ADDED))]
    assert s.handle(s.delete(7, 24)) == [(70, 24, 1, int(Event.REMOVED))]
    assert s.handle(s.dirty(7, 0)) == [(70, 0, 1, d)]
    # Unsplit, a folio's dirty event covers all of it.
    assert s.handle(s.add(7, 64, order=4), s.dirty(7, 64)) == [(70, 64, 16, int(Event.ADDED) | d)]


def test_an_inode_number_changes_hands_in_order_with_the_page_events() -> None:
    s = Scripted()
    s.gens[9] = 90
    added, removed = int(Event.ADDED), int(Event.REMOVED)
    assert s.handle(s.life(tp.ALLOC, 12)) == []  # this device reports inodes' lives
    assert s.handle(s.add(9, 0)) == [(90, 0, 1, added)]
    # The file is deleted and the path index forgets it (its listener would drop the key)
    # before the kernel's last events of the inode are read: those are generation 90's.
    s.gens[9] = 91
    s.source._forget_key(s.DEV, 9)
    assert s.handle(s.delete(9, 0), s.life(tp.FREE, 9)) == [(90, 0, 1, removed)]
    # A new file gets the number: its pages carry its own generation.
    assert s.handle(s.life(tp.ALLOC, 9), s.add(9, 3)) == [(91, 3, 1, added)]


def test_a_freed_inode_leaves_the_store_once_its_last_pages_are_told() -> None:
    s = Scripted()
    s.gens[9] = 90
    s.gens[8] = 80
    added, removed = int(Event.ADDED), int(Event.REMOVED)
    assert s.handle(s.life(tp.ALLOC, 12), s.add(9, 0), s.add(8, 0)) == [
        (90, 0, 1, added),
        (80, 0, 1, added),
    ]
    assert s.store.statistics().files == 2
    # Deleted: the last page leaves with the free in the same read; only the other stays.
    assert s.handle(s.delete(9, 0), s.life(tp.FREE, 9)) == [(90, 0, 1, removed)]
    assert s.store.keys_of(s.DEV, 9) == []
    assert s.store.keys_of(s.DEV, 8) == [(s.DEV, 8, 80)]
    assert s.store.statistics().files == 1
    # A page of it told after the free (another CPU's record, read late) is told, then gone.
    assert s.handle(s.delete(9, 1)) == [(90, 1, 1, removed)]
    assert s.store.statistics().files == 1
    # An inode whose first pages came before any path or handle told its generation: those
    # are keyed 0, the later ones with the generation. The free retires both.
    assert s.handle(s.add(5, 0)) == [(0, 0, 1, added)]
    s.gens[5] = 50
    assert s.handle(s.add(5, 1)) == [(50, 1, 1, added)]
    assert s.store.statistics().files == 3
    assert s.handle(s.delete(5, 1), s.life(tp.FREE, 5)) == [(50, 1, 1, removed)]
    assert s.store.keys_of(s.DEV, 5) == []
    assert s.store.statistics().files == 1


def test_a_deleted_page_belongs_to_the_inode_the_tasks_know() -> None:
    # The file was deleted and its number given to a new file before the events were read:
    # by path or by handle the number now leads to the new inode, but the pages deleted are
    # those of the inode the store holds (the faults tests found the new file's ADDED
    # cancelled by the old file's REMOVED under the new generation).
    s = Scripted()
    s.store.ingest([((s.DEV, 9, 90), 0, 1, int(Event.ADDED))])
    s.store.drain(s.slot, 1 << 30)
    s.gens[9] = 91
    assert s.handle(s.delete(9, 0), s.life(tp.FREE, 9), s.life(tp.ALLOC, 9), s.add(9, 0)) == [
        (90, 0, 1, int(Event.REMOVED)),
        (91, 0, 1, int(Event.ADDED)),
    ]


def test_a_file_cut_inside_a_large_folio_loses_the_pages_past_its_end(ext4_dir: Path) -> None:
    # The kernel may keep a large folio straddling the new end whole: no event for its pages
    # past the end, which are no pages of the file any more.
    s = Scripted()
    path = ext4_dir / "f"
    path.write_bytes(b"x" * (_kernel.PAGE_SIZE + 10))  # 2 pages after the cut
    ino = path.stat().st_ino
    s.source.sink.index.add(s.DEV, ino, str(path))
    gen = uuid_of(path).gen
    removed, dirty = int(Event.REMOVED), int(Event.DIRTY)
    assert s.handle(s.add(ino, 0, order=3)) == [(gen, 0, 8, int(Event.ADDED))]
    assert s.handle(s.life(tp.TRUNCATE, ino)) == [(gen, 2, 6, removed)]
    assert s.handle(s.dirty(ino, 0)) == [(gen, 0, 2, dirty)]  # the folio's pages in the file
    # Written past the end again: the folio's next dirty event counts all of it.
    assert s.handle(s.add(ino, 8, order=0), s.dirty(ino, 0)) == [
        (gen, 0, 8, dirty),
        (gen, 8, 1, int(Event.ADDED)),
    ]


# -- several CPUs: records in time order ----------------------------------------------------


class Cpus:
    """A tracepoints source reading fake per-CPU buffers (one SOCK_SEQPACKET pair each)."""

    def __init__(self, count: int) -> None:
        self.sink = Sink(Store(1), PathIndex(), overflow=lambda root: None)
        self.seen: list[tuple[int, int]] = []  # (ino, event) per observation, in order
        self.sink.attach_mirror(lambda obs: self.seen.extend((k[1], e) for k, _, _, e in obs))
        self.source = TracepointSource(self.sink)
        instance = tf.Instance("/nonexistent", {ADD: ADD_FMT, DELETE: DEL_FMT}, (), HEADER, 4096)
        self.parser = self.source.bind(instance)
        self.pairs = [
            socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(count)
        ]
        for _, reader in self.pairs:
            reader.setblocking(False)

    def write(self, cpu: int, raw: bytes) -> None:
        self.pairs[cpu][0].send(raw)

    def drain(self, *, ordered: bool) -> int:
        fds = [reader.fileno() for _, reader in self.pairs]
        return self.source.drain(fds, self.parser, 4096, ordered=ordered)

    def close(self) -> None:
        for writer, reader in self.pairs:
            writer.close()
            reader.close()


def test_a_write_on_one_cpu_and_an_eviction_on_another_come_in_order() -> None:
    cpus = Cpus(2)
    try:
        # The page was added on CPU 1 at 100 and evicted on CPU 0 at 200; CPU 0 is read first.
        cpus.write(1, page(record(add(7, 0), delta=0), stamp=100))
        cpus.write(0, page(record(delete(7, 0), delta=0), stamp=200))
        cpus.drain(ordered=False)
        assert cpus.seen == [(7, int(Event.ADDED)), (7, int(Event.REMOVED))]
    finally:
        cpus.close()


def test_records_stamped_after_a_read_began_wait_for_the_next_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus = Cpus(2)
    now = [150]
    monkeypatch.setattr(tp.time, "monotonic_ns", lambda: now[0])
    try:
        cpus.write(0, page(record(add(7, 0), delta=0), stamp=100))
        cpus.write(1, page(record(delete(7, 0), delta=0), stamp=200))
        cpus.drain(ordered=True)
        assert cpus.seen == [(7, int(Event.ADDED))]  # the eviction came after the read began
        # A record stamped before the held one, read only now (CPU 0 was read too early).
        cpus.write(0, page(record(add(8, 0), delta=0), stamp=180))
        now[0] = 250
        cpus.drain(ordered=True)
        assert cpus.seen == [(7, int(Event.ADDED)), (8, int(Event.ADDED)), (7, int(Event.REMOVED))]
    finally:
        cpus.close()


def test_a_record_stamped_far_ahead_of_the_clock_is_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus = Cpus(1)
    monkeypatch.setattr(tp.time, "monotonic_ns", lambda: 1_000)
    try:
        cpus.write(0, page(record(add(7, 0), delta=0), stamp=10**15))
        cpus.drain(ordered=True)
        assert cpus.seen == [(7, int(Event.ADDED))]
    finally:
        cpus.close()
