"""A task's scope removed, bind-mounted elsewhere, or unmounted, for both source sets.

Checked:

* the registered directory removed (``rm -rf``): the task gets REMOVED for every page it
  was told of, no error, and stays open; registering a directory made again at that path
  gives a task that sees its files;
* a bind mount of the scope: one inode, one device, two paths. A task registered on the
  original path and one registered on the bind mount both see reads and writes made through
  either path, and ``get_path`` answers each under its own root;
* the filesystem under a task unmounted (an ext4 image made by the test, loop-mounted): the
  unmount succeeds (no source keeps the filesystem busy), the task gets REMOVED for every
  page, no error, and it closes cleanly.

Each also checks that no fd, thread, child process or tracefs instance is left behind.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from faultkit import converge, read_pages, uuid_of, write_clean

import aioduet
from aioduet import Event, Uuid

pytestmark = [pytest.mark.anyio, pytest.mark.kernel, pytest.mark.usefixtures("leaks")]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def _unmount(point: Path) -> None:
    """Unmount ``point``: at once if it can be, else lazily (a failing test left it busy)."""
    if _run("umount", str(point)).returncode != 0:
        _run("umount", "-l", str(point))


@contextlib.contextmanager
def mounted(point: Path, *argv: str) -> Iterator[Path]:
    """``mount ARGV POINT`` for the block, unmounted in any case."""
    point.mkdir(exist_ok=True)
    done = _run("mount", *argv, str(point))
    assert done.returncode == 0, done.stderr
    try:
        yield point
    finally:
        if _run("mountpoint", "-q", str(point)).returncode == 0:  # the test may have unmounted it
            _unmount(point)


@contextlib.asynccontextmanager
async def task_on(
    source_set: str, path: Path, name: str = "task"
) -> AsyncIterator[tuple[aioduet.Duet, aioduet.Task]]:
    async with (
        aioduet.open_duet(source_set, interval=0.1) as duet,
        duet.register(name, Event.EXISTS, path) as task,
    ):
        with anyio.fail_after(30):
            await task.wait_scanned()
        yield duet, task


async def _no_errors(duet: aioduet.Duet) -> None:
    status = await duet.status()
    assert [(s.name, s.last_error) for s in status.sources if s.errors] == []


async def test_the_registered_directory_removed(ext4_dir: Path, source_set: str) -> None:
    scope = ext4_dir / "scope"
    files = [write_clean(scope / "sub" / f"f{i}", 4) for i in range(6)]
    view: dict[Uuid, set[int]] = {}
    async with task_on(source_set, scope) as (duet, task):
        for path in files:
            read_pages(path)
        await converge(task, view, files)
        uuids = [uuid_of(path) for path in files]
        shutil.rmtree(scope)
        await converge(task, view, [], uuids)
        await _no_errors(duet)
        assert not task.closed

        # A directory made again at the path is another directory: a new task watches it.
        again = write_clean(scope / "again", 4)
        async with duet.register("again", Event.EXISTS, scope) as fresh:
            with anyio.fail_after(30):
                await fresh.wait_scanned()
            read_pages(again)
            await converge(fresh, {}, [again])


async def test_a_bind_mount_of_the_scope(ext4_dir: Path, source_set: str) -> None:
    scope = ext4_dir / "scope"
    scope.mkdir()
    with mounted(ext4_dir / "bind", "--bind", str(scope)) as bind:
        written = write_clean(scope / "written", 4)
        read = write_clean(scope / "read", 4)
        views: list[dict[Uuid, set[int]]] = [{}, {}]
        async with aioduet.open_duet(source_set, interval=0.1) as duet:
            original = await duet.register("original", Event.EXISTS, scope)
            mirror = await duet.register("bind", Event.EXISTS, bind)
            with anyio.fail_after(30):
                await original.wait_scanned()
                await mirror.wait_scanned()
            # Written through the bind mount, read through the original path.
            (bind / "written").write_bytes(b"w" * 4 * 4096)
            read_pages(scope / "read")
            for task, view in zip((original, mirror), views, strict=True):
                await converge(task, view, [written, read])
            assert await original.get_path(uuid_of(written)) == str(scope / "written")
            assert await mirror.get_path(uuid_of(read)) == str(bind / "read")
            await _no_errors(duet)
            await original.aclose()
            await mirror.aclose()


@pytest.fixture
def loop_ext4(ext4_dir: Path) -> Iterator[Path]:
    """A fresh 32 MiB ext4 image, mounted by loop device; unmounted and detached after."""
    image = ext4_dir / "fs.img"
    with image.open("wb") as f:
        f.truncate(32 << 20)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    assert made.returncode == 0, made.stderr
    with mounted(ext4_dir / "mnt", "-o", "loop", str(image)) as point:
        yield point


async def test_the_filesystem_unmounted_under_a_task(loop_ext4: Path, source_set: str) -> None:
    files = [write_clean(loop_ext4 / "dir" / f"f{i}", 4) for i in range(4)]
    view: dict[Uuid, set[int]] = {}
    async with task_on(source_set, loop_ext4) as (duet, task):
        for path in files:
            read_pages(path)
        await converge(task, view, files)
        uuids = [uuid_of(path) for path in files]
        done = _run("umount", str(loop_ext4))
        assert done.returncode == 0, f"aioduet keeps the filesystem busy: {done.stderr}"
        await converge(task, view, [], uuids)
        await _no_errors(duet)
        assert not task.closed
