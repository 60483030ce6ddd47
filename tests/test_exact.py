"""The exact source set (root): kernel tracepoints through the framework, end to end."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pagecache import opened, read_pages, uuid_of, write_clean
from taskitems import apply_exists, collect, pages

import aioduet
import aioduet._framework
from aioduet import Event, _kernel
from aioduet.sources import ResidencySource, SourceOptions, _tracefs
from aioduet.sources.tracepoints import ADD, TracepointSource

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["asyncio"])]

INSTANCES = Path("/sys/kernel/tracing/instances")
MIB64 = (64 << 20) // _kernel.PAGE_SIZE


def _instances() -> set[str]:
    return {p.name for p in INSTANCES.iterdir()} if INSTANCES.is_dir() else set()


def _dirty_pages(path: Path) -> set[int]:
    with opened(path) as fd:
        size = os.fstat(fd).st_size
        return {f + k for f, n in _kernel.page_runs(fd, size, "dirty") for k in range(n)}


async def test_reads_evictions_writes_and_flushes_are_exact(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "big", MIB64)
    uuid = uuid_of(data)
    mask = Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED
    before = _instances()
    async with aioduet.open_duet("exact") as duet:
        assert [s.name for s in (await duet.status()).sources] == [
            "inotify",
            "tracepoints",
            "residency",
        ]
        task = await duet.register("exact", mask, ext4_dir)
        await task.wait_scanned()
        assert len(_instances() - before) == 1

        assert read_pages(data) == MIB64
        items = await collect(task, lambda got: len(pages(got, uuid, Event.ADDED)) == MIB64)
        assert sum(i.count for i in items if i.state & Event.ADDED) == MIB64  # no page twice
        assert await task.get_path(uuid) == str(data)  # found by file handle

        with opened(data) as fd:
            _kernel.evict(fd)
        items = await collect(task, lambda got: len(pages(got, uuid, Event.REMOVED)) == MIB64)
        assert sum(i.count for i in items if i.state & Event.REMOVED) == MIB64

        with opened(data, os.O_WRONLY) as fd:
            os.pwrite(fd, b"w" * 3 * _kernel.PAGE_SIZE, 40 * _kernel.PAGE_SIZE)
            dirty = _dirty_pages(data)  # whole folios: what the kernel marks, cross-checked
            assert {40, 41, 42} <= dirty
            items = await collect(task, lambda got: pages(got, uuid, Event.DIRTY) == dirty)
            os.fsync(fd)
            items = await collect(task, lambda got: pages(got, uuid, Event.FLUSHED) == dirty)
        assert _dirty_pages(data) == set()
    assert _instances() == before  # torn down on leaving


async def test_lost_events_give_overflow_and_a_converged_view(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One page of ring buffer per CPU: a page-by-page read overruns it.
    monkeypatch.setattr(
        aioduet._framework, "SourceOptions", functools.partial(SourceOptions, trace_buffer_kb=4)
    )
    files = [write_clean(ext4_dir / f"f{i}", 256) for i in range(8)]
    early, late = files[:4], files[4:]
    view: dict[aioduet.Uuid, set[int]] = {}
    async with aioduet.open_duet("exact", interval=0.1) as duet:
        task = await duet.register("lossy", Event.EXISTS, ext4_dir)
        await task.wait_scanned()
        for path in early:  # large reads: a few large folios each, nothing lost
            read_pages(path)
        uuids = [uuid_of(path) for path in early]
        got = await collect(
            task, lambda got: all(len(pages(got, u, Event.ADDED)) == 256 for u in uuids)
        )
        apply_exists(view, got)
        # Two of the files read above are evicted, and at once, with the loop blocked so
        # that nothing is drained, a flood overwrites the one-page buffers: the REMOVED
        # events are lost with the rest, and only a rescan that knows what the task was told
        # (the residency source mirrors the tracepoints) can report them.
        for gone in early[:2]:
            with opened(gone) as evicted:
                _kernel.evict(evicted)
        for path in late:
            with opened(path) as fd:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
                for page in range(0, 256, 2):
                    os.pread(fd, 1, page * _kernel.PAGE_SIZE)
        got = await collect(task, lambda got: any(i.state & Event.OVERFLOW for i in got))
        apply_exists(view, got)
        status = await duet.status()
        tracepoints = next(s for s in status.sources if s.name == "tracepoints")
        assert tracepoints.lost >= 1 and tracepoints.overflows >= 1
        # The task was told its scope's current state again: it converges (bounded).
        truth: dict[aioduet.Uuid, set[int]] = {}
        with anyio.move_on_after(30):
            while True:
                truth = {}
                for path in files:
                    with opened(path) as fd:
                        runs = _kernel.page_runs(fd, 256 * _kernel.PAGE_SIZE, "cache")
                    truth[uuid_of(path)] = {f + k for f, n in runs for k in range(n)}
                if all(view.get(uuid, set()) == cached for uuid, cached in truth.items()):
                    break
                with anyio.move_on_after(0.5):
                    apply_exists(view, await task.fetch(100_000))
        for uuid, cached in truth.items():
            assert view.get(uuid, set()) == cached, uuid


def after_the_scans_look(
    monkeypatch: pytest.MonkeyPatch, data: Path, then: Callable[[], None]
) -> list[bool]:
    """Run ``then`` once, in the registration scan's thread, right after its look at ``data``
    (before the scan covers the file). The list it returns is not empty once it ran."""
    ident = (os.stat(data).st_dev, os.stat(data).st_ino)
    original = ResidencySource._run_batch
    raced: list[bool] = []

    async def run_batch(
        self: ResidencySource, work: Callable[[Any], None], intro: Any = None
    ) -> Any:
        def racing(batch: Any) -> None:
            work(batch)
            if intro is not None and ident in batch.walked and not raced:
                raced.append(True)
                then()

        return await original(self, racing, intro)

    monkeypatch.setattr(ResidencySource, "_run_batch", run_batch)
    return raced


async def test_a_file_read_while_the_scan_covers_it_is_reported(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race: the registration scan looks at a file (not cached), the file is read, its
    # events reach the framework before the scan marks it covered (undecided: not routed),
    # then the scan marks it covered. No periodic scan follows in the exact set.
    data = write_clean(ext4_dir / "data", 4)
    ident = (os.stat(data).st_dev, os.stat(data).st_ino)
    duets: list[aioduet.Duet] = []

    def read_and_wait() -> None:
        read_pages(data)
        deadline = time.monotonic() + 10
        while not any(ident in i.missed for i in duets[0]._intros.values()):
            assert time.monotonic() < deadline, "the events never reached relevance"
            time.sleep(0.005)  # a worker thread, waiting for the event loop's drain

    raced = after_the_scans_look(monkeypatch, data, read_and_wait)
    async with aioduet.open_duet("exact") as duet:
        duets.append(duet)
        task = await duet.register("raced", Event.ADDED, ext4_dir)
        await task.wait_scanned()
        assert raced
        items = await collect(task, lambda got: len(pages(got, uuid_of(data), Event.ADDED)) == 4)
        assert pages(items, uuid_of(data), Event.ADDED) == {0, 1, 2, 3}


async def test_a_file_read_during_its_recheck_is_told_once(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file with events before the scan covers it is looked at once more (the recheck).
    # Pages read just before that look are in it, and their events are drained after it:
    # they must not reach the task as well (a state-based task would count them twice).
    data = write_clean(ext4_dir / "data", 4)
    ident = (os.stat(data).st_dev, os.stat(data).st_ino)
    raced = after_the_scans_look(monkeypatch, data, lambda: read_pages(data, 0, 2))
    original_look = aioduet._framework._state_of

    def look(located: list[tuple[int, int, str]]) -> Any:
        if any((dev, ino) == ident for dev, ino, _ in located):
            read_pages(data, 2, 2)  # right before the recheck's look
        return original_look(located)

    monkeypatch.setattr(aioduet._framework, "_state_of", look)
    async with aioduet.open_duet("exact") as duet:
        task = await duet.register("raced", Event.EXISTS, ext4_dir)
        await task.wait_scanned()
        assert raced
        duet._sink.settle()  # every event of the reads is in now: a second report too
        items = await task.poll(1000)
        uuid = uuid_of(data)
        told = [p for i in items if i.uuid == uuid and i.state & Event.ADDED for p in i.pages]
        assert sorted(told) == [0, 1, 2, 3]


async def test_cancellation_leaves_no_instance(ext4_dir: Path) -> None:
    before = _instances()
    with anyio.move_on_after(2) as scope:
        async with aioduet.open_duet("exact") as duet:
            task = await duet.register("cancelled", Event.EXISTS, ext4_dir)
            await task.wait_scanned()
            assert len(_instances() - before) == 1
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert _instances() == before


async def test_exact_needs_root_and_says_so(ext4_dir: Path) -> None:
    script = """
import os, anyio, anyio._backends._asyncio, aioduet, aioduet.sources
os.setgid(65534); os.setuid(65534)  # after the imports: /root, where Python lives, is 0700
try:
    aioduet.open_duet("exact")
except aioduet.SourceUnavailable as exc:
    print("refused:", exc)
"""
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert "need root (running as uid 65534)" in result.stdout.decode()
    assert "sources='scan'" in result.stdout.decode()


async def test_auto_prefers_the_exact_set_as_root() -> None:
    assert aioduet.open_duet("auto").source_names == ("inotify", "tracepoints", "residency")


async def test_auto_falls_back_for_others_and_logs_why(ext4_dir: Path) -> None:
    script = """
import logging, os, anyio, anyio._backends._asyncio, aioduet, aioduet.sources
os.setgid(65534); os.setuid(65534)
logging.basicConfig(level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
print("chose", "+".join(aioduet.open_duet("auto").source_names))
"""
    with anyio.fail_after(60):
        result = await anyio.run_process([sys.executable, "-c", script], check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().split() == ["chose", "inotify+residency+writeback"]
    log = result.stderr.decode()
    assert "aioduet INFO sources='auto': the unprivileged set inotify+residency+writeback" in log
    assert "the tracepoints need root (running as uid 65534)" in log


async def test_excluded_paths_stay_out_of_the_exact_set_too(ext4_dir: Path) -> None:
    kept = write_clean(ext4_dir / "kept", 2)
    skipped = [write_clean(ext4_dir / "cache" / "inside", 2), write_clean(ext4_dir / "x.tmp", 2)]
    async with aioduet.open_duet("exact", exclude=["cache", "*.tmp"]) as duet:
        task = await duet.register("exclude", Event.ADDED, ext4_dir)
        await task.wait_scanned()
        for path in skipped:
            read_pages(path)
        read_pages(kept)
        items = await collect(task, lambda got: len(pages(got, uuid_of(kept), Event.ADDED)) == 2)
        # The tracepoints of the excluded files came first: they were dropped, not delayed.
        items += task.fetch_nowait(1000)
        assert {item.uuid for item in items} == {uuid_of(kept)}


async def test_registration_waits_for_the_kernel_filters(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filters follow scopes in a worker thread. Made slow here (a fault injected, not a
    # wait): a task scanned before its device is in the filters would miss a read made just
    # after wait_scanned() returns, both from the tracepoints and from its scan.
    applied: list[dict[str, str]] = []
    real = TracepointSource._apply_filters

    def slow_apply(self: TracepointSource, instance: Any, filters: dict[str, str]) -> None:
        time.sleep(0.3)
        real(self, instance, filters)
        applied.append(filters)

    monkeypatch.setattr(TracepointSource, "_apply_filters", slow_apply)
    data = write_clean(ext4_dir / "data", 16)
    uuid = uuid_of(data)
    async with (
        aioduet.open_duet("exact") as duet,
        duet.register("t", Event.ADDED, ext4_dir) as task,
    ):
        await task.wait_scanned()
        dev = _tracefs.kernel_dev(os.stat(ext4_dir).st_dev)
        assert any(f"s_dev == {dev}" in filters[ADD] for filters in applied)
        assert read_pages(data) == 16
        items = await collect(task, lambda got: len(pages(got, uuid, Event.ADDED)) == 16)
        assert pages(items, uuid, Event.ADDED) == set(range(16))


async def test_files_walked_uncached_are_found_without_file_handles(ext4_dir: Path) -> None:
    # The registration scan saw where each (uncached) file lives: the first events of a
    # file then cost an open of that path, not a file-handle lookup.
    files = [write_clean(ext4_dir / f"d{i % 3}" / f"f{i}", 2) for i in range(30)]
    async with (
        aioduet.open_duet("exact") as duet,
        duet.register("t", Event.ADDED, ext4_dir) as task,
    ):
        await task.wait_scanned()
        for path in files:
            assert read_pages(path) == 2
        uuids = {uuid_of(path): path for path in files}
        await collect(task, lambda got: all(len(pages(got, u, Event.ADDED)) == 2 for u in uuids))
        for uuid, path in uuids.items():
            assert await task.get_path(uuid) == str(path)
        resolves = sum(r.statistics().resolves for r, _ in duet._resolvers.values())
        assert resolves == 0


async def test_a_file_replaced_after_the_scan_gets_its_own_generation(ext4_dir: Path) -> None:
    # The scan's hint names the old file; a new one, often with the same inode number on
    # ext4, must not be reported under the old file's generation.
    path = write_clean(ext4_dir / "f", 4)
    async with (
        aioduet.open_duet("exact") as duet,
        duet.register("t", Event.ADDED, ext4_dir) as task,
    ):
        await task.wait_scanned()
        old = uuid_of(path)
        path.unlink()
        write_clean(path, 4)
        new = uuid_of(path)
        assert new != old
        assert read_pages(path) == 4
        items = await collect(task, lambda got: len(pages(got, new, Event.ADDED)) == 4)
        assert not [item for item in items if item.uuid == old]


async def test_an_inode_number_reused_by_a_new_file_gets_the_new_generation(
    ext4_dir: Path,
) -> None:
    # The tracepoints name inodes by number; the source remembers each number's generation.
    # When a file is deleted and ext4 gives its number to a new file, the items of the new
    # file must carry the new generation (bench/flood.py found them under the old one).
    old = write_clean(ext4_dir / "old", 8)
    old_uuid = uuid_of(old)
    async with aioduet.open_duet("exact", interval=0.1) as duet:
        task = await duet.register("reuse", Event.EXISTS, ext4_dir)
        await task.wait_scanned()
        read_pages(old)
        await collect(task, lambda got: len(pages(got, old_uuid, Event.ADDED)) == 8)
        old.unlink()
        await collect(task, lambda got: len(pages(got, old_uuid, Event.REMOVED)) == 8)
        # ext4 hands a freed inode number out again soon: create files until one has it.
        new = None
        for attempt in range(200):
            candidate = write_clean(ext4_dir / f"new{attempt}", 8)
            if os.stat(candidate).st_ino == old_uuid.ino:
                new = candidate
                break
        assert new is not None, "ext4 did not reuse the inode number"
        new_uuid = uuid_of(new)
        assert new_uuid.gen != old_uuid.gen
        read_pages(new)
        got = await collect(task, lambda got: len(pages(got, new_uuid, Event.ADDED)) == 8)
        assert not pages(got, old_uuid, Event.ADDED)  # nothing of the new file under the old


async def test_pages_dirty_before_the_start_are_reported_flushed(ext4_dir: Path) -> None:
    # The tracepoints report the writeback of pages they saw dirtied; pages dirtied before
    # the source started are known from the registration scan (and after lost events, from
    # the rescan): their writeback must be reported all the same.
    data = write_clean(ext4_dir / "data", 4)
    uuid = uuid_of(data)
    with opened(data, os.O_WRONLY) as fd:
        os.pwrite(fd, b"d" * 2 * _kernel.PAGE_SIZE, 0)
        async with (
            aioduet.open_duet("exact") as duet,
            duet.register("t", Event.MODIFIED, ext4_dir) as task,
        ):
            await task.wait_scanned()
            await collect(task, lambda got: pages(got, uuid, Event.DIRTY) == {0, 1})
            os.fsync(fd)
            await collect(task, lambda got: pages(got, uuid, Event.FLUSHED) == {0, 1})


async def test_deleted_files_leave_no_entries_in_the_store(ext4_dir: Path) -> None:
    # A daemon watching a busy tree must not keep an entry for every file that ever lived
    # there (bench/soak.py): ext4 says when an inode is freed, and its entry goes then.
    files = [write_clean(ext4_dir / f"f{i:02d}", 2) for i in range(40)]
    uuids = [uuid_of(path) for path in files]
    anchor = write_clean(ext4_dir / "anchor", 1)  # stays; evicted
    async with aioduet.open_duet("exact", interval=0.1) as duet:
        task = await duet.register("churn", Event.EXISTS, ext4_dir)
        await task.wait_scanned()
        for path in files:
            read_pages(path)
        await collect(task, lambda got: all(len(pages(got, u, Event.ADDED)) == 2 for u in uuids))
        held = (await duet.status()).store.files
        for path in files:
            path.unlink()
        await collect(task, lambda got: all(len(pages(got, u, Event.REMOVED)) == 2 for u in uuids))
        # The records come in time order: once a later read is told, the frees are in.
        read_pages(anchor)
        await collect(task, lambda got: bool(pages(got, uuid_of(anchor), Event.ADDED)))
        left = (await duet.status()).store.files
    assert held >= 40
    assert left <= 1, f"{left} store entries left of {held}"  # the anchor's
