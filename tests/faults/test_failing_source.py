"""A source that raises: while starting, while running, in a registration scan, on a new scope.

Checked, for both source sets:

* starting: ``open_duet()`` raises the source's own error; the sources started before it are
  stopped (no fd, thread, guard process or tracefs instance is left);
* running: the tasks get OVERFLOW, ``status()`` counts the error and shows it, the source is
  restarted and the tasks' views converge to the cache again;
* a registration scan: the task gets OVERFLOW and its scan still ends (``wait_scanned``),
  the framework keeps running, and the task's view converges;
* a new scope: ``register()`` raises the error and leaves nothing registered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from faultkit import converge, read_pages, wait_overflow, write_clean

import aioduet
from aioduet import Event, Uuid
from aioduet.sources import InotifySource, ResidencySource

pytestmark = [pytest.mark.anyio, pytest.mark.kernel, pytest.mark.usefixtures("leaks")]


class Boom(RuntimeError):
    """The injected failure."""


async def test_a_source_that_fails_to_start(
    ext4_dir: Path, source_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run(self: ResidencySource, **kwargs: Any) -> None:
        raise Boom("residency cannot start")

    # The residency source starts last: every other source is running when it fails.
    monkeypatch.setattr(ResidencySource, "run", run)
    with anyio.fail_after(20), pytest.raises(Boom, match="cannot start"):
        async with aioduet.open_duet(source_set):
            pass


async def test_a_source_that_fails_while_running(
    ext4_dir: Path, source_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [write_clean(ext4_dir / f"f{i}", 4) for i in range(4)]
    failing = anyio.Event()
    original = InotifySource._read

    async def read(self: InotifySource, fd: int) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(original, self, fd)
            await failing.wait()
            raise Boom("inotify broke")

    monkeypatch.setattr(InotifySource, "_read", read)
    view: dict[Uuid, set[int]] = {}
    async with (
        aioduet.open_duet(source_set, interval=0.1) as duet,
        duet.register("task", Event.EXISTS, ext4_dir) as task,
    ):
        with anyio.fail_after(30):
            await task.wait_scanned()
        read_pages(files[0])
        await converge(task, view, files)
        monkeypatch.setattr(InotifySource, "_read", original)  # the restart works
        failing.set()
        await wait_overflow(task, view)
        status = await duet.status()
        inotify = next(s for s in status.sources if s.name == "inotify")
        assert inotify.errors >= 1
        assert inotify.last_error is not None and "Boom: inotify broke" in inotify.last_error
        for path in files[1:]:
            read_pages(path)
        await converge(task, view, files)


async def test_a_registration_scan_that_fails(
    ext4_dir: Path, source_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [write_clean(ext4_dir / f"f{i}", 4) for i in range(4)]
    for path in files[:2]:
        read_pages(path)
    original = ResidencySource.introduce
    calls = 0

    async def introduce(self: ResidencySource, root: str, intro: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Boom("the scan broke")
        await original(self, root, intro)

    monkeypatch.setattr(ResidencySource, "introduce", introduce)
    view: dict[Uuid, set[int]] = {}
    async with (
        aioduet.open_duet(source_set, interval=0.1) as duet,
        duet.register("task", Event.EXISTS, ext4_dir) as task,
    ):
        await wait_overflow(task, view)
        with anyio.fail_after(30):
            await task.wait_scanned()
        assert duet.running
        status = await duet.status()
        residency = next(s for s in status.sources if s.name == "residency")
        assert residency.last_error is not None and "the scan broke" in residency.last_error
        await converge(task, view, files)
        read_pages(files[2])
        await converge(task, view, files)


async def test_a_source_that_refuses_a_scope(
    ext4_dir: Path, source_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def add_scope(self: ResidencySource, root: str) -> None:
        raise Boom(f"cannot watch {root}")

    async with aioduet.open_duet(source_set, max_tasks=1) as duet:
        with monkeypatch.context() as patch:
            patch.setattr(ResidencySource, "add_scope", add_scope)
            with pytest.raises(Boom, match="cannot watch"):
                duet.register("refused", Event.EXISTS, ext4_dir)
        assert (await duet.status()).tasks == ()
        # Its slot was given back: the one task allowed can be registered now.
        async with duet.register("next", Event.EXISTS, ext4_dir) as task:
            with anyio.fail_after(30):
                await task.wait_scanned()
            assert [t.name for t in (await duet.status()).tasks] == ["next"]
