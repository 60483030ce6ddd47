"""The worker-side monitor: cached pages per file from an EXISTS task's items.

Unit tests drive ``_apply`` with scripted items; kernel tests watch real files on ext4 and
compare with cachestat (the monitor runs the exact sources where it can, as a worker does).
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import msgpack
import pytest
from pagecache import read_pages, write_clean

from aioduet import Event, Item, NotFound, Uuid
from aioduet.dask import ResidencyMonitor
from aioduet.dask._summary import ENVELOPE

A, B = Uuid(1, 10, 7), Uuid(1, 11, 3)


class ScriptedTask:
    """Answers get_path from a dict; a missing uuid is NotFound."""

    path = "/data"

    def __init__(self, paths: dict[Uuid, str]) -> None:
        self.paths = paths
        self.asked: list[Uuid] = []

    async def get_path(self, uuid: Uuid) -> str:
        self.asked.append(uuid)
        try:
            return self.paths[uuid]
        except KeyError:
            raise NotFound(str(uuid)) from None


def apply(monitor: ResidencyMonitor, task: ScriptedTask, *items: Item) -> None:
    anyio.run(monitor._apply, task, list(items))  # type: ignore[arg-type]


def test_counts_follow_added_and_removed(tmp_path: Path) -> None:
    monitor, task = ResidencyMonitor(tmp_path), ScriptedTask({A: "/data/a", B: "/data/sub/b"})
    apply(monitor, task, Item(A, 0, 8, Event.ADDED), Item(B, 4, 2, Event.ADDED))
    assert monitor.pages() == {"a": 8, "sub/b": 2}
    apply(monitor, task, Item(A, 2, 3, Event.REMOVED), Item(B, 4, 2, Event.REMOVED))
    assert monitor.pages() == {"a": 5}
    assert task.asked == [A, B]  # each path is looked up once while the file is cached


def test_overflow_starts_over_and_a_reused_inode_is_a_new_file(tmp_path: Path) -> None:
    monitor = ResidencyMonitor(tmp_path)
    reused = Uuid(1, 10, 8)
    task = ScriptedTask({A: "/data/a", B: "/data/b", reused: "/data/new"})
    apply(monitor, task, Item(A, 0, 8, Event.ADDED), Item(B, 0, 1, Event.ADDED))
    before = monitor.version
    apply(monitor, task, Item(A, 0, 0, Event.OVERFLOW), Item(B, 0, 1, Event.ADDED))
    assert monitor.pages() == {"b": 1}
    assert monitor.overflows == 1 and monitor.version > before
    apply(monitor, task, Item(reused, 0, 2, Event.ADDED))
    assert monitor.pages() == {"b": 1, "new": 2}


def test_a_path_not_found_is_asked_again_at_the_next_item(tmp_path: Path) -> None:
    monitor, task = ResidencyMonitor(tmp_path), ScriptedTask({})
    apply(monitor, task, Item(A, 0, 4, Event.ADDED))
    assert monitor.pages() == {}  # cached, but where is not known yet
    task.paths[A] = "/data/late"
    apply(monitor, task, Item(A, 4, 1, Event.ADDED))
    assert monitor.pages() == {"late": 5}
    assert task.asked == [A, A]


def test_removing_more_than_was_told_never_goes_below_zero(tmp_path: Path) -> None:
    monitor, task = ResidencyMonitor(tmp_path), ScriptedTask({A: "/data/a"})
    apply(monitor, task, Item(A, 0, 2, Event.ADDED), Item(A, 0, 9, Event.REMOVED))
    assert monitor.pages() == {}


def test_a_root_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="data root"):
        ResidencyMonitor(tmp_path / "missing").start()


def wait_for(condition: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the monitor did not catch up in time"
        time.sleep(0.05)


@pytest.mark.kernel
def test_cached_pages_per_file_match_cachestat(ext4_dir: Path) -> None:
    files = {name: write_clean(ext4_dir / name, 64) for name in ("one", "two", "d/three")}
    with ResidencyMonitor(ext4_dir) as monitor:
        wanted = {"one": (0, 64), "two": (8, 16), "d/three": (32, 1)}
        truth: dict[str, int] = {}

        def caught_up() -> bool:
            # Read right before comparing: the machine's reclaim daemon evicts idle pages.
            for name, (first, count) in wanted.items():
                truth[name] = read_pages(files[name], first, count)
            return monitor.pages() == truth

        wait_for(caught_up)
        assert truth == {"one": 64, "two": 16, "d/three": 1}
        summary = monitor.summary(max_bytes=1024)
        assert summary.files == {name: pages * 4096 for name, pages in truth.items()}


@pytest.mark.kernel
def test_the_summary_of_many_cached_files_keeps_the_most_cached(ext4_dir: Path) -> None:
    files = [write_clean(ext4_dir / f"f{n:03d}", 1 + n % 8) for n in range(200)]
    with ResidencyMonitor(ext4_dir) as monitor:

        def all_seen() -> bool:
            for path in files:
                read_pages(path)
            return len(monitor.pages()) == len(files)

        wait_for(all_seen)
        summary = monitor.summary(max_bytes=1024)
        assert len(msgpack.packb(summary.to_wire())) <= 1024 + ENVELOPE
        assert 0 < len(summary.files) < len(files)
        assert summary.omitted_files == len(files) - len(summary.files)
        pages = monitor.pages()
        left_out = [count for name, count in pages.items() if name not in summary.files]
        assert min(summary.files.values()) >= max(left_out) * 4096
