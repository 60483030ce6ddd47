"""One worker's view of its data directory: cached pages per file, kept by an aioduet task.

The monitor registers one ``EXISTS`` task for the data root, in an embedded framework (or a
daemon's, with ``daemon=``), and counts each file's cached pages from the task's items.
State-based items carry net changes, so counts add up: ``ADDED`` pages come in, ``REMOVED``
ones leave, and an ``OVERFLOW`` empties the counts before the current state is told again.

It runs on its own event loop in its own thread (an anyio blocking portal), so that neither
the framework's work nor a slow path lookup ever blocks the Dask worker's event loop; the
worker reads snapshots under a lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import attrs

from .._framework import open_duet
from .._model import Event, Item, Uuid
from ..abc import Duet, Task
from ..daemon import connect
from ..errors import NotFound
from ._summary import ResidencySummary

__all__ = ["ResidencyMonitor"]

log = logging.getLogger(__name__)

_FETCH = 4096


@attrs.define(eq=False)
class _File:
    gen: int
    pages: int = 0
    path: str | None = None
    """Relative to the root; None until the task resolved it."""
    asked: bool = False
    """Its path is being looked up (once per batch of items)."""


@attrs.define(eq=False)
class ResidencyMonitor:
    """Cached pages per file under ``root``, kept current by an aioduet task in a thread.

    Use :meth:`start` and :meth:`stop` (both block, briefly) or ``with``.
    """

    root: Path = attrs.field(converter=Path)
    """The data directory watched."""
    sources: str | Sequence[str] = "auto"
    """The embedded framework's sources (as :func:`aioduet.open_duet`)."""
    daemon: str | None = None
    """An aioduet daemon's socket to register with instead of an embedded framework."""
    version: int = attrs.field(default=0, init=False)
    """Bumped by every change to the counts."""
    overflows: int = attrs.field(default=0, init=False)
    """``OVERFLOW`` items seen: observations were lost and the counts started over."""
    error: BaseException | None = attrs.field(default=None, init=False)
    """Why the monitor stopped on its own, if it did (its counts are then empty)."""
    _files: dict[tuple[int, int], _File] = attrs.field(factory=dict, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _exits: contextlib.ExitStack = attrs.field(factory=contextlib.ExitStack, init=False)
    _portal: anyio.from_thread.BlockingPortal | None = attrs.field(default=None, init=False)
    _cancel: anyio.CancelScope | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        """Start the thread and register the task; returns once the task is registered.

        Raises:
            NotADirectoryError: ``root`` is not a directory.
            aioduet.AioduetError: the framework or the daemon could not start the task.
        """
        if not self.root.is_dir():
            raise NotADirectoryError(f"the data root {str(self.root)!r} is not a directory")
        if self._portal is not None:
            raise RuntimeError("the monitor was already started")
        self._portal = self._exits.enter_context(
            anyio.from_thread.start_blocking_portal(name=f"aioduet-dask {self.root}")
        )
        try:
            future, _ = self._portal.start_task(self._run, name="aioduet-dask monitor")
        except BaseException:
            self._exits.close()
            raise
        future.add_done_callback(self._ended)

    def stop(self) -> None:
        """Deregister the task and end the thread (idempotent)."""
        if self._portal is not None and self._cancel is not None:
            with contextlib.suppress(RuntimeError):  # the portal's loop already ended
                self._portal.call(self._cancel.cancel)
        self._exits.close()

    def __enter__(self) -> ResidencyMonitor:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def pages(self) -> dict[str, int]:
        """Cached pages per file (relative path), files with none left out; a snapshot."""
        with self._lock:
            return {f.path: f.pages for f in self._files.values() if f.pages and f.path}

    def summary(self, max_bytes: int) -> ResidencySummary:
        """The bounded summary of :meth:`pages` (see :class:`ResidencySummary`)."""
        return ResidencySummary.from_pages(self.pages(), max_bytes=max_bytes)

    # -- the monitor's own thread ----------------------------------------------------------

    def _ended(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.error = future.exception()
            log.error("the residency monitor of %s stopped: %s", self.root, self.error)
            with self._lock:
                self._files.clear()
                self.version += 1

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as self._cancel:
            framework: Duet = (
                open_duet(self.sources) if self.daemon is None else connect(self.daemon)
            )
            # One statement, two managers: register() is called once the framework is open.
            async with (
                framework,
                framework.register("dask-residency", Event.EXISTS, self.root) as task,
            ):
                task_status.started()
                while True:
                    await self._apply(task, await task.fetch(_FETCH))

    async def _apply(self, task: Task, items: list[Item]) -> None:
        unresolved: list[tuple[_File, Uuid]] = []
        with self._lock:
            for item in items:
                if item.state == Event.OVERFLOW:
                    self.overflows += 1
                    for file in self._files.values():
                        file.pages = 0
                    continue
                uuid = item.uuid
                key = (uuid.dev, uuid.ino)
                known = self._files.get(key)
                if known is None or known.gen != uuid.gen:  # new, or the inode number was reused
                    known = self._files[key] = _File(uuid.gen)
                file = known
                if item.state & Event.ADDED:
                    file.pages += item.count
                if item.state & Event.REMOVED:
                    file.pages = max(0, file.pages - item.count)
                if file.path is None and file.pages and not file.asked:
                    file.asked = True
                    unresolved.append((file, uuid))
            for key in [key for key, file in self._files.items() if not file.pages]:
                del self._files[key]
            self.version += 1
        for file, uuid in unresolved:
            try:
                path = await task.get_path(uuid)
            except NotFound:
                path = None  # gone, or not reachable now: asked again at its next item
            with self._lock:
                file.asked = False
                if path is not None:
                    file.path = str(PurePosixPath(path).relative_to(task.path))
                    self.version += 1
