"""Running out of file descriptors (``RLIMIT_NOFILE``), for both source sets.

The soft limit is lowered to the number of fds already open, so that the next ``open`` fails
with EMFILE, and always restored (in ``finally``). Checked:

* at start: ``open_duet()`` raises SourceUnavailable naming the fd limit, and whatever it had
  set up is released;
* in the middle of a registration scan, until further notice: the scan fails on the next
  directory, the task gets OVERFLOW, ``status()`` shows the error, the scan is tried again
  and, once fds are free, the task's view converges to the cache;
* for a few files of a directory listed already: once fds are free again the task's view
  converges to the cache (no file stays unreported).
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from faultkit import apply_exists, converge, make_tree, read_pages, wait_overflow

import aioduet
from aioduet import Event, Uuid
from aioduet.sources import ResidencySource

pytestmark = [pytest.mark.anyio, pytest.mark.kernel, pytest.mark.usefixtures("leaks")]


class FdLimit:
    """Lowers the soft RLIMIT_NOFILE to the fds open now; :meth:`restore` undoes it."""

    def __init__(self) -> None:
        self.saved = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.lock = threading.Lock()

    def exhaust(self) -> None:
        with self.lock:
            highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
            resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, self.saved[1]))
            # Every fd below the limit is taken: fill the holes.
            self.fillers: list[int] = []
            try:
                while True:
                    self.fillers.append(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                assert exc.errno == errno.EMFILE, exc

    def restore(self) -> None:
        with self.lock:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.saved)
            for fd in getattr(self, "fillers", []):
                os.close(fd)
            self.fillers = []


@contextmanager
def fd_limit() -> Iterator[FdLimit]:
    limit = FdLimit()
    try:
        yield limit
    finally:
        limit.restore()


async def test_no_fd_left_to_start(ext4_dir: Path, source_set: str) -> None:
    with fd_limit() as limit:
        duet = aioduet.open_duet(source_set)
        limit.exhaust()
        with anyio.fail_after(20), pytest.raises(aioduet.SourceUnavailable) as raised:
            async with duet:
                pass
        limit.restore()
    assert raised.value.errno == errno.EMFILE
    assert "RLIMIT_NOFILE" in str(raised.value)


async def test_fds_run_out_during_a_registration_scan(
    ext4_dir: Path, source_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(ext4_dir / "tree", 4, 100, 1)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    original = ResidencySource._check
    checks = 0
    view: dict[Uuid, set[int]] = {}
    with fd_limit() as limit:

        def check(self: ResidencySource, path: str, intro: bool, *args: Any) -> None:
            nonlocal checks
            if intro:
                checks += 1
                if checks == 50:  # in the first directory: the next one cannot be listed
                    limit.exhaust()
            original(self, path, intro, *args)

        monkeypatch.setattr(ResidencySource, "_check", check)
        async with aioduet.open_duet(source_set, interval=0.1) as duet:
            for path in files:
                read_pages(path)
            async with duet.register("task", Event.EXISTS, root) as task:
                # The scan fails: the task hears of it, and the scan is tried again.
                await wait_overflow(task, view)
                limit.restore()
                with anyio.fail_after(30):
                    await task.wait_scanned()
                status = await duet.status()
                residency = next(s for s in status.sources if s.name == "residency")
                assert residency.last_error is not None
                assert "Too many open files" in residency.last_error
                apply_exists(view, task.fetch_nowait(100_000))
                await converge(task, view, files)


async def test_fds_run_out_for_a_few_files_of_a_scan(
    ext4_dir: Path, source_set: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(ext4_dir / "tree", 4, 100, 1)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    original = ResidencySource._check
    checks = 0
    view: dict[Uuid, set[int]] = {}
    with fd_limit() as limit:

        def check(self: ResidencySource, path: str, intro: bool, *args: Any) -> None:
            # In the last directory, listed already: only files fail to open.
            nonlocal checks
            if intro:
                checks += 1
                if checks == 350:
                    limit.exhaust()
                elif checks == 390:
                    limit.restore()
            original(self, path, intro, *args)

        monkeypatch.setattr(ResidencySource, "_check", check)
        async with aioduet.open_duet(source_set, interval=0.1) as duet:
            for path in files:
                read_pages(path)
            async with duet.register("task", Event.EXISTS, root) as task:
                with anyio.fail_after(30):
                    await task.wait_scanned()
                assert checks >= 390
                items = task.fetch_nowait(100_000)
                # The files it could not open were lost observations: said, and repaired.
                assert any(item.state == Event.OVERFLOW for item in items)
                apply_exists(view, items)
                await converge(task, view, files, seconds=10)
