"""One worker's view of its data directory: cached pages per file, kept by an aioduet task.

The monitor registers one ``EXISTS`` task for the data root, in an embedded framework (or a
daemon's, with ``daemon=``), and applies the task's items to a
:class:`~aioduet.views.ResidencyView` (per-page maps: an ``OVERFLOW`` empties them before the
current state is told again), keeping only the files with cached pages.

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
from ..views import ResidencyView
from ._summary import ResidencySummary

__all__ = ["ResidencyMonitor"]

log = logging.getLogger(__name__)

_FETCH = 4096


@attrs.define(eq=False)
class _Path:
    gen: int
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
    """Bumped by every change to the maps or paths."""
    error: BaseException | None = attrs.field(default=None, init=False)
    """Why the monitor stopped on its own, if it did (its maps are then empty)."""
    _view: ResidencyView = attrs.field(factory=ResidencyView, init=False)
    _paths: dict[tuple[int, int], _Path] = attrs.field(factory=dict, init=False)
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

    @property
    def overflows(self) -> int:
        """``OVERFLOW`` items seen: observations were lost and the maps started over."""
        return self._view.overflows

    def pages(self) -> dict[str, int]:
        """Cached pages per file (relative path), files with none left out; a snapshot."""
        with self._lock:
            found = {}
            for key, file in self._view.files.items():
                named = self._paths.get(key)
                if named is not None and named.path is not None:
                    found[named.path] = file.cached
            return found

    def summary(self, max_bytes: int) -> ResidencySummary:
        """The bounded summary of :meth:`pages` (see :class:`ResidencySummary`)."""
        return ResidencySummary.from_pages(self.pages(), max_bytes=max_bytes)

    # -- the monitor's own thread ----------------------------------------------------------

    def _ended(self, future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.error = future.exception()
            log.error("the residency monitor of %s stopped: %s", self.root, self.error)
            with self._lock:
                self._view.files.clear()
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
        unresolved: list[tuple[_Path, Uuid]] = []
        with self._lock:
            files, paths = self._view.files, self._paths
            for key in self._view.apply_all(items):
                if not files[key].cached_map.count(1):  # nothing cached: nothing to keep
                    del files[key]
                    paths.pop(key, None)
            for key in dict.fromkeys((i.uuid.dev, i.uuid.ino) for i in items):  # items' order
                file = files.get(key)
                if file is None:
                    continue
                named = paths.get(key)
                if named is None or named.gen != file.uuid.gen:  # new, or the number reused
                    named = paths[key] = _Path(file.uuid.gen)
                if named.path is None and not named.asked:
                    named.asked = True
                    unresolved.append((named, file.uuid))
            self.version += 1
        for named, uuid in unresolved:
            try:
                path = await task.get_path(uuid)
            except NotFound:
                path = None  # gone, or not reachable now: asked again at its next item
            with self._lock:
                named.asked = False
                if path is not None:
                    named.path = str(PurePosixPath(path).relative_to(task.path))
                    self.version += 1
