"""Files deleted, renamed, truncated or replaced in the middle of a registration scan, and
between two fetches of a task, for both source sets.

Checked: the registration scan ends (``wait_scanned``), no error reaches the task, and the
task's EXISTS view converges to the truth: every file present has exactly its cached pages
(cachestat), and no page is left of deleted files, replaced inodes or files moved out of the
scope. Two cases of their own: a truncation that keeps the file's large folio whole, and a
deleted file whose inode number a new file gets at once (both xfail for the exact set: see
their reasons). Closing the framework while a walk is part way through a directory holds
nothing open afterwards. No fd, thread, child process or tracefs instance is left behind.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from faultkit import Resources, apply_exists, converge, make_tree, read_pages, uuid_of

import aioduet
from aioduet import Event, Uuid
from aioduet.sources import ResidencySource

pytestmark = [pytest.mark.anyio, pytest.mark.kernel, pytest.mark.usefixtures("leaks")]

DIRS, FILES, PAGES = 16, 100, 2


class Mutations:
    """Deletes, renames, truncates and replaces one file in each directory of the tree."""

    def __init__(self, root: Path, outside: Path) -> None:
        self.root, self.outside = root, outside
        self.gone: list[Uuid] = []
        self.done = threading.Event()

    def apply(self) -> None:
        # The replacements are written first: a number freed by a deletion is not reused by
        # them (inode reuse is a fault of its own, tested below).
        fresh = {}
        for d in range(3, DIRS, 5):
            fresh[d] = self.root / f"d{d:03}" / ".f005.new"
            fresh[d].write_bytes(b"n" * 3 * 4096)
        for d in range(DIRS):
            sub = self.root / f"d{d:03}"
            path = sub / "f005"
            kind = d % 5
            if kind == 0:  # deleted
                self.gone.append(uuid_of(path))
                path.unlink()
            elif kind == 1:  # renamed inside the scope
                path.rename(sub / "renamed")
            elif kind == 2:  # truncated (to 0: a partial truncation is tested below)
                os.truncate(path, 0)
            elif kind == 3:  # replaced by a new inode, as editors save
                self.gone.append(uuid_of(path))
                os.replace(fresh[d], path)
            else:  # moved out of the scope
                self.gone.append(uuid_of(path))
                path.rename(self.outside / f"from-{d}")
        self.done.set()


def present(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_files_change_during_the_registration_scan(
    ext4_dir: Path, source_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(ext4_dir / "tree", DIRS, FILES, PAGES)
    outside = ext4_dir / "outside"
    outside.mkdir()
    for path in present(root):
        read_pages(path)
    mutations = Mutations(root, outside)
    original = ResidencySource._check
    checks = 0

    def check(self: ResidencySource, path: str, intro: bool, *args: Any, **kwargs: Any) -> None:
        # In the worker thread, in the middle of the scan's second batch: the file about to
        # be checked and others, listed already or not yet, change under the scan.
        nonlocal checks
        if intro and not mutations.done.is_set():
            checks += 1
            if checks == 300:
                mutations.apply()
        original(self, path, intro, *args, **kwargs)

    monkeypatch.setattr(ResidencySource, "_check", check)
    view: dict[Uuid, set[int]] = {}
    async with aioduet.open_duet(source_set, interval=0.1) as duet:
        task = await duet.register("scan", Event.EXISTS, root)
        with anyio.fail_after(30):
            await task.wait_scanned()
        assert mutations.done.is_set(), "the scan ended before the mutations"
        apply_exists(view, task.fetch_nowait(100_000))
        await converge(task, view, present(root), mutations.gone)
        status = await duet.status()
        assert [s.last_error for s in status.sources if s.errors] == []
        await task.aclose()


async def test_files_change_between_fetches(ext4_dir: Path, source_set: str) -> None:
    root = make_tree(ext4_dir / "tree", DIRS, 10, PAGES)
    outside = ext4_dir / "outside"
    outside.mkdir()
    view: dict[Uuid, set[int]] = {}
    async with (
        aioduet.open_duet(source_set, interval=0.1) as duet,
        duet.register("fetch", Event.EXISTS, root) as task,
    ):
        with anyio.fail_after(30):
            await task.wait_scanned()
        for path in present(root):
            read_pages(path)
        # Items of every file are pending; the task takes one, then the files change.
        with anyio.fail_after(10):
            apply_exists(view, await task.fetch(1))
        mutations = Mutations(root, outside)
        mutations.apply()
        await converge(task, view, present(root), mutations.gone)
        status = await duet.status()
        assert [s.last_error for s in status.sources if s.errors] == []


async def test_truncation_removes_the_pages_beyond_the_new_end(
    ext4_dir: Path, source_set: str
) -> None:
    # One 8-page folio per file: cutting it to 2 pages leaves the folio whole in the cache,
    # but pages 2-7 are no pages of the file any more (cachestat no longer counts them).
    files = [ext4_dir / f"t{i}" for i in range(8)]
    for path in files:
        path.write_bytes(b"t" * 8 * 4096)
        read_pages(path)
    view: dict[Uuid, set[int]] = {}
    async with (
        aioduet.open_duet(source_set, interval=0.1) as duet,
        duet.register("truncate", Event.EXISTS, ext4_dir) as task,
    ):
        with anyio.fail_after(30):
            await task.wait_scanned()
        await converge(task, view, files)
        for path in files:
            os.truncate(path, 4096 + 100)
        await converge(task, view, files, seconds=8)


async def test_a_deleted_file_whose_inode_number_is_reused_at_once(
    ext4_dir: Path, source_set: str
) -> None:
    old = ext4_dir / "old"
    old.write_bytes(b"o" * 2 * 4096)
    read_pages(old)
    view: dict[Uuid, set[int]] = {}
    async with (
        aioduet.open_duet(source_set, interval=0.1) as duet,
        duet.register("reuse", Event.EXISTS, ext4_dir) as task,
    ):
        with anyio.fail_after(30):
            await task.wait_scanned()
        await converge(task, view, [old])
        gone = uuid_of(old)
        # Without yielding to the loop: the events of both inodes are read together.
        old.unlink()
        for attempt in range(100):
            new = ext4_dir / f"new{attempt}"
            new.write_bytes(b"n" * 2 * 4096)
            if new.stat().st_ino == gone.ino:
                break
        else:
            raise AssertionError("ext4 gave the freed inode number to none of 100 files")
        await converge(task, view, [new], [gone], seconds=8)


async def test_closing_in_the_middle_of_a_walk(ext4_dir: Path, source_set: str) -> None:
    # The smallest budget: the periodic walk (or a rescan) is always part way through a
    # directory when the framework closes; the framework object lives on after.
    root = make_tree(ext4_dir / "tree", 2, 200, 1)
    before = Resources.now()
    async with (
        aioduet.open_duet(source_set, interval=0.05, budget=4) as duet,
        duet.register("task", Event.EXISTS, root) as task,
    ):
        with anyio.fail_after(30):
            await task.wait_scanned()
        duet._sink.lost(None)  # a rescan: the exact set's residency walk is under way too
        with anyio.fail_after(10):
            # status() has no change notification: poll it, within a bound.
            while not _residency(await duet.status()).budget_used:  # noqa: ASYNC110
                await anyio.sleep(0.05)
    assert not duet.running
    assert Resources.now().leaked_since(before) == {}


def _residency(status: aioduet.Status) -> aioduet.SourceStatus:
    return next(s for s in status.sources if s.name == "residency")
