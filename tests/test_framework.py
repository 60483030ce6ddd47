"""open_duet() and register(): validation, limits, and that errors leave the framework working."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import anyio.abc
import pytest
from pagecache import evict, make_tree, read_pages, uuid_of, write_clean
from taskitems import collect, pages

import aioduet
from aioduet import Event, _kernel
from aioduet._framework import _state_of, validate_mask
from aioduet.sources import resolve_sources

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (0, "empty"),
        (Event.EXISTS | Event.ADDED, "EXISTS already covers"),
        (Event.EXISTS | Event.REMOVED, "EXISTS already covers"),
        (Event.MODIFIED | Event.DIRTY, "MODIFIED already covers"),
        (Event.MODIFIED | Event.FLUSHED, "MODIFIED already covers"),
        (Event.OVERFLOW, "OVERFLOW"),
        (Event.ADDED | Event.OVERFLOW, "OVERFLOW"),
        (0x100, "no aioduet.Event"),
    ],
)
def test_invalid_masks_are_refused(mask: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_mask(mask)


@pytest.mark.parametrize(
    "mask",
    [
        Event.EXISTS,
        Event.MODIFIED,
        Event.EXISTS | Event.MODIFIED,
        Event.ADDED,
        Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED,
        Event.EXISTS | Event.DIRTY,
    ],
)
def test_valid_masks_are_kept(mask: Event) -> None:
    assert validate_mask(mask) == mask


def test_mask_must_be_an_int() -> None:
    with pytest.raises(TypeError):
        validate_mask("ADDED")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        validate_mask(True)


def test_open_duet_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_tasks"):
        aioduet.open_duet(max_tasks=0)
    with pytest.raises(ValueError, match="max_tasks"):
        aioduet.open_duet(max_tasks=65)
    with pytest.raises(ValueError, match="interval"):
        aioduet.open_duet("scan", interval=0)
    with pytest.raises(ValueError, match="unknown source set"):
        aioduet.open_duet(sources="fast")
    with pytest.raises(ValueError, match="unknown source"):
        aioduet.open_duet(sources=["residency", "magic"])
    with pytest.raises(ValueError, match="empty"):
        aioduet.open_duet(sources=[])
    with pytest.raises(ValueError, match="add 'residency'"):
        aioduet.open_duet(sources=["fanotify"])
    with pytest.raises(ValueError, match="add 'residency'"):
        aioduet.open_duet(sources=["tracepoints"])


@pytest.mark.parametrize("sources", ["scan", "exact"])
async def test_bad_registrations_raise_at_once_and_the_framework_keeps_working(
    ext4_dir: Path, sources: str
) -> None:
    a_file = write_clean(ext4_dir / "plain", 4)
    async with aioduet.open_duet(sources, interval=0.05, max_tasks=2) as duet:
        with pytest.raises(ValueError, match="empty"):
            duet.register("zero", 0, ext4_dir)
        with pytest.raises(ValueError, match="EXISTS"):
            duet.register("mixed", Event.EXISTS | Event.ADDED, ext4_dir)
        with pytest.raises(ValueError, match="MODIFIED"):
            duet.register("mixed", Event.MODIFIED | Event.DIRTY, ext4_dir)
        with pytest.raises(ValueError, match="OVERFLOW"):
            duet.register("overflow", Event.OVERFLOW, ext4_dir)
        with pytest.raises(ValueError, match="absolute"):
            duet.register("relative", Event.EXISTS, "relative/dir")
        with pytest.raises(FileNotFoundError):
            duet.register("missing", Event.EXISTS, ext4_dir / "missing")
        with pytest.raises(NotADirectoryError):
            duet.register("file", Event.EXISTS, a_file)
        with pytest.raises(TypeError):
            duet.register(3, Event.EXISTS, ext4_dir)  # type: ignore[arg-type]
        first = await duet.register("one", Event.EXISTS, ext4_dir)
        second = await duet.register("two", Event.EXISTS, ext4_dir)
        with pytest.raises(aioduet.TooManyTasks, match="already runs 2 tasks"):
            duet.register("three", Event.EXISTS, ext4_dir)
        assert [t.name for t in (await duet.status()).tasks] == ["one", "two"]
        await second.aclose()
        # The freed slot is usable, and the framework still delivers items.
        async with duet.register("again", Event.ADDED, ext4_dir) as third:
            await third.wait_scanned()
            read_pages(a_file)
            with anyio.fail_after(10):
                items = await third.fetch()
            assert items[0].state & Event.ADDED
            assert third.id > second.id  # ids are never reused
        await first.aclose()


async def test_register_needs_an_open_framework(ext4_dir: Path) -> None:
    duet = aioduet.open_duet()
    with pytest.raises(anyio.ClosedResourceError):
        duet.register("early", Event.EXISTS, ext4_dir)
    async with duet:
        pass
    with pytest.raises(anyio.ClosedResourceError):
        duet.register("late", Event.EXISTS, ext4_dir)
    with pytest.raises(RuntimeError, match="only once"):
        async with duet:
            pass


async def test_symlinked_root_is_resolved(ext4_dir: Path) -> None:
    real = ext4_dir / "real"
    real.mkdir()
    link = ext4_dir / "link"
    os.symlink(real, link)
    async with (
        aioduet.open_duet() as duet,
        duet.register("linked", Event.EXISTS, link) as task,
    ):
        assert task.path == str(real)


async def test_fetch_arguments_are_checked(ext4_dir: Path) -> None:
    async with (
        aioduet.open_duet() as duet,
        duet.register("args", Event.EXISTS, ext4_dir) as task,
    ):
        with pytest.raises(ValueError, match="max_items"):
            task.fetch_nowait(0)
        with pytest.raises(TypeError):
            await task.get_path((1, 2, 3))  # type: ignore[arg-type]
        with pytest.raises(aioduet.NotFound):
            await task.get_path(aioduet.Uuid(1, 2, 3))


class FailingSource:
    """A source that starts, then fails once: the framework must not hide that."""

    name = "failing"

    def __init__(self) -> None:
        self.runs = 0
        self.restarted = anyio.Event()

    def add_scope(self, root: str) -> None:
        pass

    def remove_scope(self, root: str) -> None:
        pass

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.runs += 1
        task_status.started()
        if self.runs == 1:
            await anyio.sleep(0.01)
            raise RuntimeError("the kernel said no")
        self.restarted.set()
        await anyio.sleep_forever()

    async def introduce(self, root: str, deliver: object) -> None:
        pass

    def status(self) -> aioduet.SourceStatus:
        return aioduet.SourceStatus(name=self.name, active=True, observations=0)


async def test_a_failing_source_is_reported_signalled_and_restarted(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    source = FailingSource()
    monkeypatch.setattr("aioduet._framework.make_sources", lambda *args: [source])
    async with aioduet.open_duet() as duet:
        task = await duet.register("victim", Event.EXISTS, ext4_dir)
        with anyio.fail_after(10):
            items = await task.fetch()
            await source.restarted.wait()
        assert [item.state for item in items] == [Event.OVERFLOW]
        assert await task.get_path(items[0].uuid) == str(ext4_dir)
        (status,) = (await duet.status()).sources
        assert status.errors == 1 and status.overflows == 1
        assert status.last_error == "RuntimeError: the kernel said no"
    assert "source 'failing' failed" in caplog.text


class BrokenAtStart(FailingSource):
    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        raise aioduet.SourceUnavailable("cannot start here")


async def test_a_source_failing_to_start_makes_open_duet_raise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("aioduet._framework.make_sources", lambda *args: [BrokenAtStart()])
    with pytest.raises(aioduet.SourceUnavailable, match="cannot start here"):
        async with aioduet.open_duet():
            pass


async def test_closing_mid_scan_is_prompt_and_leaks_no_fds(ext4_dir: Path) -> None:
    tree = make_tree(ext4_dir / "tree", dirs=10, files=200, size=1)
    fds_before = len(os.listdir("/proc/self/fd"))
    with anyio.fail_after(10):
        async with aioduet.open_duet("scan", interval=0.05) as duet:
            tasks = [await duet.register(f"t{i}", Event.EXISTS, tree) for i in range(3)]
            assert any(task.statistics().scanning for task in tasks)
        # Closed while registration scans were running: they ended with the framework.
        for task in tasks:
            await task.wait_scanned()
            assert task.closed
    assert len(os.listdir("/proc/self/fd")) == fds_before


@pytest.mark.kernel
def test_a_recheck_tells_the_cached_and_dirty_pages_now(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 8)
    gone = write_clean(ext4_dir / "gone", 1)
    fd = os.open(data, os.O_RDWR)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for page in (0, 1, 2):
            os.pread(fd, 1, page * _kernel.PAGE_SIZE)
        os.pwrite(fd, b"x", 6 * _kernel.PAGE_SIZE)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, _kernel.inode_generation(fd))
        cached: set[int] = set()
        for first, count in _kernel.page_runs(fd, st.st_size, "cache"):
            cached.update(range(first, first + count))
        state = _state_of([(key[0], key[1], str(data))])
    finally:
        os.close(fd)
    gone_st = os.stat(gone)
    gone.unlink()
    added = {p for k, f, c, e in state if e == Event.ADDED for p in range(f, f + c)}
    dirty = {p for k, f, c, e in state if e == Event.DIRTY for p in range(f, f + c)}
    assert added == cached and {0, 1, 2, 6} <= added
    assert dirty == {6}
    assert all(k == key for k, *_ in state)
    # A file gone from its path (or another file there now) has nothing to tell.
    assert _state_of([(gone_st.st_dev, gone_st.st_ino, str(gone))]) == []
    assert _state_of([(key[0], key[1] + 1, str(data))]) == []


def test_source_names_may_come_in_one_comma_separated_string() -> None:
    assert resolve_sources("residency, inotify") == ("inotify", "residency")
    assert resolve_sources("residency") == ("residency",)
    with pytest.raises(ValueError, match="unknown source 'magic'"):
        resolve_sources("residency,magic")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_registered_after_an_unseen_eviction_sees_the_next_read(
    ext4_dir: Path,
) -> None:
    # The scan source still thinks the file cached when the second task registers: its scan
    # finds it evicted and tells the first task REMOVED. Told to the new task too (which never
    # heard of the pages), that REMOVED cancelled the ADDED of the next read, and the new
    # task never learnt the file was cached (found by tests/test_cancellation.py).
    data = write_clean(ext4_dir / "data", 8)
    uuid = uuid_of(data)
    async with aioduet.open_duet("scan", interval=3600) as duet:
        first = await duet.register("first", Event.EXISTS, ext4_dir)
        await first.wait_scanned()
        assert read_pages(data) == 8
        await collect(first, lambda got: pages(got, uuid, Event.ADDED) == set(range(8)))
        evict(data)
        second = await duet.register("second", Event.EXISTS, ext4_dir)
        await second.wait_scanned()
        assert read_pages(data) == 8
        got = await collect(second, lambda got: pages(got, uuid, Event.ADDED) == set(range(8)))
        assert not pages(got, uuid, Event.REMOVED)
