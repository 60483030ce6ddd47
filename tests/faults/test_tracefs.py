"""tracefs made unavailable under the exact source set while it runs.

The system's tracefs at /sys/kernel/tracing is shared with other processes, so the test mounts
tracefs a second time, on a directory of its own (one tracefs for the whole kernel: the same
instances appear under both mounts), points the tracepoint source at it, and detaches that
mount while the source runs (``umount -l``, as an administrator would when the mount is
busy). What was open keeps working; what goes by path no longer finds tracefs there.

Checked: nothing changes for the running source, which reaches its instance through an fd
of tracefs's ``instances`` directory: events keep coming (the task's view follows reads made
after the unmount), a new task on another device gets its kernel filters, no error and no
OVERFLOW; closing the framework removes its tracefs instance all the same (none is left in
/sys/kernel/tracing/instances), and no fd, thread or guard process is left behind.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from faultkit import converge, own_instances, read_pages, write_clean

import aioduet
import aioduet._framework
import aioduet.sources
from aioduet import Event, Uuid
from aioduet.sources import TracepointSource

pytestmark = [pytest.mark.anyio, pytest.mark.kernel, pytest.mark.usefixtures("leaks")]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def _mounted(point: Path) -> bool:
    return _run("mountpoint", "-q", str(point)).returncode == 0


@pytest.fixture
def private_tracefs(ext4_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tracefs mounted on a directory of the test's, used by the tracepoint source."""
    point = ext4_dir / "tracing"
    point.mkdir()
    done = _run("mount", "-t", "tracefs", "nodev", str(point))
    assert done.returncode == 0, done.stderr

    def make_sources(original: Any, *args: Any) -> Any:
        sources = original(*args)
        for source in sources:
            if isinstance(source, TracepointSource):
                source.tracefs = str(point)
        return sources

    monkeypatch.setattr(
        aioduet._framework,
        "make_sources",
        functools.partial(make_sources, aioduet.sources.make_sources),
    )
    try:
        yield point
    finally:
        if _mounted(point):
            _run("umount", "-l", str(point))


@pytest.fixture
def other_device(ext4_dir: Path) -> Iterator[Path]:
    """A tmpfs of the test's: registering it changes the tracepoints' device filters."""
    point = ext4_dir / "tmpfs"
    point.mkdir()
    done = _run("mount", "-t", "tmpfs", "-o", "size=1m", "aioduet-fault", str(point))
    assert done.returncode == 0, done.stderr
    try:
        yield point
    finally:
        _run("umount", "-l", str(point))


async def test_tracefs_unmounted_under_the_exact_source(
    ext4_dir: Path, private_tracefs: Path, other_device: Path
) -> None:
    data = ext4_dir / "data"
    files = [write_clean(data / f"f{i}", 8) for i in range(4)]
    view: dict[Uuid, set[int]] = {}
    before = own_instances()
    async with (
        aioduet.open_duet("exact") as duet,
        duet.register("task", Event.EXISTS, data) as task,
    ):
        with anyio.fail_after(30):
            await task.wait_scanned()
        assert len(own_instances() - before) == 1
        read_pages(files[0])
        await converge(task, view, files)

        done = _run("umount", "-l", str(private_tracefs))
        assert done.returncode == 0, done.stderr
        read_pages(files[1])  # through the ring buffers still open
        await converge(task, view, files)

        # New kernel filters (another device) go through the instance's fd as well.
        other = await duet.register("other", Event.EXISTS, other_device)
        with anyio.fail_after(30):
            await other.wait_scanned()
        read_pages(files[2])
        await converge(task, view, files)
        status = await duet.status()
        tracepoints = next(s for s in status.sources if s.name == "tracepoints")
        assert (tracepoints.active, tracepoints.errors, tracepoints.last_error) == (
            True,
            0,
            None,
        )
        assert not any(item.state & Event.OVERFLOW for item in task.fetch_nowait(1000))
        await other.aclose()
    assert own_instances() == before
