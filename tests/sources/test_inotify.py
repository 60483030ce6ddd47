"""The inotify source on real files: hints, renames, new trees, deletions, overflow."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import anyio
import attrs
import pytest
from hintrig import FakeChecker, NoIntro, open_fds, recording_sink, until

from aioduet.sources.inotify import InotifySource

pytestmark = [pytest.mark.anyio, pytest.mark.kernel]


@attrs.define
class Rig:
    source: InotifySource
    fake: FakeChecker
    overflows: list[str | None]


@contextlib.asynccontextmanager
async def running(
    *roots: Path, exclude: Sequence[str] = (), checker: bool = True
) -> AsyncIterator[Rig]:
    overflows: list[str | None] = []
    sink = recording_sink(overflows)
    fake = FakeChecker()
    if checker:
        sink.attach(fake)
    source = InotifySource(sink, exclude)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        for root in roots:
            source.add_scope(str(root))
            with anyio.fail_after(5):
                await source.introduce(str(root), NoIntro())
        yield Rig(source, fake, overflows)
        tg.cancel_scope.cancel()
    assert not source.status().active


QUEUE_LIMIT = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())


def touch(path: Path, data: bytes = b"x") -> None:
    path.write_bytes(data)


def truncate(path: Path) -> None:
    os.truncate(path, 0)


def relative(paths: Iterable[str], root: Path) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


def make_dirs(root: Path, open_: str, shut: str) -> None:
    root.chmod(0o755)
    (root / open_).mkdir()
    (root / shut).mkdir()
    (root / shut).chmod(0)


async def test_reads_writes_creates_deletes_and_renames_are_hinted(ext4_dir: Path) -> None:
    before = open_fds()
    existing = ext4_dir / "old"
    touch(existing)
    async with running(ext4_dir) as rig:
        fake = rig.fake
        assert rig.source.watches == 1
        touch(ext4_dir / "new")
        await until(lambda: str(ext4_dir / "new") in fake.checked)
        existing.read_bytes()
        await until(lambda: str(existing) in fake.checked)
        (ext4_dir / "new").rename(ext4_dir / "renamed")
        await until(lambda: fake.moved)
        assert fake.moved == [(str(ext4_dir / "new"), str(ext4_dir / "renamed"))]
        existing.unlink()
        await until(lambda: fake.gone)
        assert fake.gone == [str(existing)]
        truncate(ext4_dir / "renamed")
        fake.checked.clear()
        await until(lambda: str(ext4_dir / "renamed") in fake.checked)
        status = rig.source.status()
        assert status.name == "inotify" and status.active
        assert status.observations >= 5
        assert (status.errors, status.overflows, status.lost) == (0, 0, 0)
    assert open_fds() == before


async def test_renames_into_and_out_of_the_scope(ext4_dir: Path) -> None:
    inside, outside = ext4_dir / "in", ext4_dir / "out"
    inside.mkdir()
    outside.mkdir()
    touch(outside / "coming")
    touch(inside / "leaving")
    (outside / "dir").mkdir()
    touch(outside / "dir" / "f")
    async with running(inside) as rig:
        fake = rig.fake
        (outside / "coming").rename(inside / "coming")
        await until(lambda: str(inside / "coming") in fake.checked)
        (inside / "leaving").rename(outside / "leaving")
        await until(lambda: fake.gone)
        assert fake.gone == [str(inside / "leaving")]
        assert fake.moved == []
        # A directory moved in is watched, then checked as a whole.
        (outside / "dir").rename(inside / "dir")
        await until(lambda: fake.trees)
        assert fake.trees == [str(inside / "dir")]
        touch(inside / "dir" / "g")
        await until(lambda: str(inside / "dir" / "g") in fake.checked)
        # ... and moved out again, it is no longer watched.
        (inside / "dir").rename(outside / "dir")
        await until(lambda: str(inside / "dir") in fake.gone)
        await until(lambda: rig.source.watches == 1)
        touch(outside / "dir" / "h")
        touch(inside / "barrier")
        await until(lambda: str(inside / "barrier") in fake.checked)
        assert not [p for p in fake.checked if "/out/" in p or p.endswith("/h")]


async def test_new_nested_directories_are_watched_at_once(ext4_dir: Path) -> None:
    async with running(ext4_dir) as rig:
        fake = rig.fake
        deep = ext4_dir / "a" / "b" / "c"
        deep.mkdir(parents=True)
        touch(deep / "first")
        # The file may be hinted itself or covered by a tree check above it.
        first = str(deep / "first")
        await until(
            lambda: (
                first in fake.checked or any(first.startswith(tree + "/") for tree in fake.trees)
            )
        )
        await until(lambda: rig.source.watches == 4)
        touch(deep / "second")
        await until(lambda: str(deep / "second") in fake.checked)


async def test_a_renamed_directory_reports_new_paths(ext4_dir: Path) -> None:
    (ext4_dir / "d" / "sub").mkdir(parents=True)
    touch(ext4_dir / "d" / "sub" / "f")
    async with running(ext4_dir) as rig:
        fake = rig.fake
        (ext4_dir / "d").rename(ext4_dir / "e")
        await until(lambda: fake.moved)
        assert fake.moved == [(str(ext4_dir / "d"), str(ext4_dir / "e"))]
        assert fake.trees == []  # a rename within the tree is no new tree
        touch(ext4_dir / "e" / "sub" / "f", b"y")
        await until(lambda: str(ext4_dir / "e" / "sub" / "f") in fake.checked)
        assert not [p for p in fake.checked if p.startswith(str(ext4_dir / "d") + "/")]


async def test_deleted_directories_end_their_watches(ext4_dir: Path) -> None:
    root = ext4_dir / "root"
    (root / "x" / "y").mkdir(parents=True)
    touch(root / "x" / "y" / "f")
    async with running(root) as rig:
        assert rig.source.watches == 3
        shutil.rmtree(root / "x")
        await until(lambda: rig.source.watches == 1)
        assert str(root / "x") in rig.fake.gone
        shutil.rmtree(root)  # the scope root itself
        await until(lambda: rig.source.watches == 0)
        status = rig.source.status()
        assert status.errors == 0 and status.last_error is None and status.overflows == 0


async def test_excluded_files_and_directories_are_ignored(ext4_dir: Path) -> None:
    (ext4_dir / "cache").mkdir()
    async with running(ext4_dir, exclude=["*.tmp", "cache", str(ext4_dir / "skip*")]) as rig:
        fake = rig.fake
        assert rig.source.watches == 1
        touch(ext4_dir / "x.tmp")
        touch(ext4_dir / "skipped")
        (ext4_dir / "skipdir").mkdir()
        touch(ext4_dir / "cache" / "f")
        (ext4_dir / "x.tmp").rename(ext4_dir / "x.kept")
        touch(ext4_dir / "kept")
        await until(lambda: str(ext4_dir / "kept") in fake.checked)
        assert str(ext4_dir / "x.kept") in fake.checked  # moved out of the exclusion
        names = relative(fake.checked, ext4_dir)
        assert not [n for n in names if n.endswith(".tmp") or "skip" in n or "cache" in n]
        assert fake.trees == [] and fake.moved == []
        assert rig.source.watches == 1


async def test_symlink_loops_do_not_hang_and_are_not_followed(ext4_dir: Path) -> None:
    (ext4_dir / "a").mkdir()
    (ext4_dir / "a" / "loop").symlink_to(ext4_dir)
    (ext4_dir / "up").symlink_to("a")
    async with running(ext4_dir) as rig:
        assert rig.source.watches == 2


async def test_unreadable_directories_are_counted_not_fatal(ext4_dir: Path) -> None:
    # Root reads everything: drop to nobody's effective uid for the set-up.
    make_dirs(ext4_dir, "open", "shut")
    async with running() as rig:
        os.seteuid(65534)
        try:
            rig.source.add_scope(str(ext4_dir))
            with anyio.fail_after(5):
                await rig.source.introduce(str(ext4_dir), NoIntro())
        finally:
            os.seteuid(0)
        assert rig.source.watches == 2
        assert rig.source.denied == 1
        status = rig.source.status()
        assert status.errors == 1 and "shut" in (status.last_error or "")
        touch(ext4_dir / "open" / "f")
        await until(lambda: str(ext4_dir / "open" / "f") in rig.fake.checked)


async def test_queue_overflow_signals_lost_and_asks_for_a_rescan(ext4_dir: Path) -> None:
    files = [ext4_dir / "a", ext4_dir / "b"]
    for f in files:
        touch(f)
    async with running(ext4_dir) as rig:
        fds = [os.open(f, os.O_RDONLY) for f in files]
        try:
            # The loop is not ours to yield: the source cannot read while we generate.
            # Alternate two files: the kernel merges identical consecutive events.
            for _ in range(QUEUE_LIMIT // 2 + 1000):
                os.pread(fds[0], 1, 0)
                os.pread(fds[1], 1, 0)
        finally:
            for fd in fds:
                os.close(fd)
        await until(lambda: rig.overflows and rig.fake.rescans)
        # OVERFLOW for the scope at once; one rescan of everything once watches are back.
        assert rig.overflows == [str(ext4_dir)]
        assert rig.fake.rescans == [None]
        status = rig.source.status()
        assert status.overflows >= 1 and status.lost >= 1
        # Still working afterwards.
        touch(ext4_dir / "after")
        await until(lambda: str(ext4_dir / "after") in rig.fake.checked)


async def test_scopes_are_refcounted_and_nested_scopes_share_watches(ext4_dir: Path) -> None:
    (ext4_dir / "sub").mkdir()
    before = open_fds()
    async with running(ext4_dir, ext4_dir / "sub") as rig:
        source = rig.source
        assert source.watches == 2
        source.add_scope(str(ext4_dir))
        source.remove_scope(str(ext4_dir))
        touch(ext4_dir / "still")
        await until(lambda: str(ext4_dir / "still") in rig.fake.checked)
        source.remove_scope(str(ext4_dir))
        await until(lambda: source.watches == 1)  # the nested scope keeps its watch
        source.remove_scope(str(ext4_dir / "sub"))
        await until(lambda: source.watches == 0)
        touch(ext4_dir / "sub" / "late")
        source.remove_scope(str(ext4_dir / "sub"))  # one remove too many is harmless
        await source.introduce(str(ext4_dir), NoIntro())  # not a scope: returns at once
    assert open_fds() == before
    assert str(ext4_dir / "sub" / "late") not in rig.fake.checked


async def test_without_a_checker_watches_stay_current(ext4_dir: Path) -> None:
    (ext4_dir / "d").mkdir()
    async with running(ext4_dir, checker=False) as rig:
        touch(ext4_dir / "f")
        (ext4_dir / "d").rename(ext4_dir / "e")
        (ext4_dir / "n" / "m").mkdir(parents=True)
        await until(lambda: rig.source.watches == 4)
        await until(lambda: rig.source.status().observations >= 4)
        assert rig.fake.checked == [] and rig.source.status().errors == 0


async def test_scopes_added_before_run_are_watched_when_it_starts(ext4_dir: Path) -> None:
    sink = recording_sink([])
    fake = FakeChecker()
    sink.attach(fake)
    source = InotifySource(sink)
    source.add_scope(str(ext4_dir))
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        with anyio.fail_after(5):
            await source.introduce(str(ext4_dir), NoIntro())
        assert source.watches == 1
        touch(ext4_dir / "f")
        await until(lambda: fake.checked)
        tg.cancel_scope.cancel()
    assert source.watches == 0
