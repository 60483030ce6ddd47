"""Record the page-cache residency of a tree over time (``aioduet record``).

One state-based task (``EXISTS | MODIFIED``) watches the tree; every ``interval`` seconds its
pending items are applied to a :class:`~aioduet.views.ResidencyView` and the files they
changed are written as a frame: per-region cached page counts, dirty pages, and the pages the
items moved. The tree is walked once at the start so that files never cached still have their
place (and size) in the file space of a heatmap; files that appear later are declared when
their first item arrives.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Callable

import anyio
import anyio.to_thread
import attrs

from .. import _kernel
from .. import abc as _abc
from .._model import Event, Item
from ..errors import NotFound
from ._record import FileSample, Frame, Header, RecordedFile, RecordWriter, region_pages_for
from ._residency import Activity, FileResidency, ResidencyView

__all__ = ["FrameSummary", "RecordSummary", "record"]

_MASK = Event.EXISTS | Event.MODIFIED
_POLL = 4096
_MOST_ITEMS_PER_FRAME = 200_000  # the rest waits for the next frame, which comes at once


@attrs.frozen
class FrameSummary:
    """What :func:`record` just wrote, for progress reports and for tests."""

    index: int
    """The frame's number (0 first)."""
    t: float
    """Seconds since the recording began."""
    cached: int
    """Cached pages of the whole tree, as recorded."""
    changed: dict[str, int]
    """Cached pages of each file the frame lists, by path relative to the root."""
    items: int
    """Items applied for this frame."""
    overflows: int
    """OVERFLOW items among them."""


@attrs.frozen
class RecordSummary:
    """What a finished recording holds."""

    path: str
    """The recording file."""
    frames: int
    files: int
    duration: float
    """Seconds recorded."""
    items: int
    """Items applied in all."""


@attrs.define(eq=False)
class _Declared:
    file: RecordedFile
    written: tuple[tuple[int, ...], int] | None = None
    """The (regions, dirty) last written, to skip files whose items changed nothing."""
    activity: Activity = attrs.field(factory=Activity)
    """The file's activity at the last frame."""
    state: FileResidency | None = None
    """The view's state it was taken from (a reused inode number gets a new one)."""


def _walk(root: str) -> list[tuple[str, int, int, int]]:
    """(relative path, dev, ino, pages) of every regular file under ``root``, in path order."""
    found = []
    for directory, dirs, names in os.walk(root):
        dirs.sort()
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except OSError:  # vanished or unreadable: declared later if it gets items
                continue
            if stat.S_ISREG(st.st_mode):
                pages = -(-st.st_size // _kernel.PAGE_SIZE)
                found.append((os.path.relpath(path, root), st.st_dev, st.st_ino, pages))
    found.sort()
    return found


def _relative(path: str, root: str) -> str:
    """``path`` relative to ``root`` (get_path answers only paths under the task's root)."""
    return path[len(root) :].lstrip("/") or os.path.basename(path)


@attrs.define(eq=False)
class _Recorder:
    task: _abc.Task
    writer: RecordWriter
    regions_per_file: int
    view: ResidencyView = attrs.field(factory=ResidencyView)
    declared: dict[tuple[int, int], _Declared] = attrs.field(factory=dict)
    unknown: set[tuple[int, int]] = attrs.field(factory=set)
    """Files whose path could not be found (gone before their first frame)."""
    frames: int = 0
    items: int = 0

    def declare(self, key: tuple[int, int], path: str, pages: int) -> _Declared:
        file = RecordedFile(
            id=len(self.declared),
            path=path,
            pages=pages,
            region_pages=region_pages_for(pages, self.regions_per_file),
        )
        self.writer.declare(file)
        entry = self.declared[key] = _Declared(file)
        return entry

    async def _resolve(self, key: tuple[int, int], state: FileResidency) -> _Declared | None:
        if key in self.unknown:
            return None
        try:
            path = await self.task.get_path(state.uuid)
        except NotFound:
            self.unknown.add(key)
            return None
        try:
            pages = -(-os.stat(path).st_size // _kernel.PAGE_SIZE)
        except OSError:
            pages = len(state.cached_map)
        return self.declare(key, _relative(path, self.task.path), pages)

    def _grown(self, entry: _Declared, pages: int) -> None:
        """Declare a file again when its pages outgrow its declaration."""
        old = entry.file
        region_pages = old.region_pages
        if math.ceil(pages / region_pages) > 2 * self.regions_per_file:
            region_pages = region_pages_for(pages, self.regions_per_file)
        entry.file = attrs.evolve(old, pages=pages, region_pages=region_pages)
        self.writer.declare(entry.file)

    async def frame(self, t: float, scanned: float | None) -> FrameSummary:
        items: list[Item] = []
        while len(items) < _MOST_ITEMS_PER_FRAME:
            batch = await self.task.poll(_POLL)
            if not batch:
                break
            items.extend(batch)
        overflows = self.view.overflows
        changed = self.view.apply_all(items)
        overflows = self.view.overflows - overflows
        self.items += len(items)
        if scanned is not None:
            self.writer.scanned(scanned)
        samples = []
        paths = {}
        for key in sorted(changed):
            state = self.view.files[key]
            entry = self.declared.get(key) or await self._resolve(key, state)
            if entry is None:
                continue
            pages = max(entry.file.pages, len(state.cached_map))
            if pages > entry.file.pages:
                self._grown(entry, pages)
            size = entry.file.region_pages
            regions = tuple(
                state.cached_in(i * size, size) for i in range(max(1, math.ceil(pages / size)))
            )
            dirty = state.dirty
            baseline = entry.activity if entry.state is state else Activity()
            activity = state.activity - baseline
            if (regions, dirty) == entry.written and activity == Activity():
                continue
            entry.written, entry.activity, entry.state = (regions, dirty), state.activity, state
            samples.append(FileSample(entry.file.id, size, regions, dirty, activity))
            paths[entry.file.path] = sum(regions)
        self.writer.frame(Frame(self.frames, t, tuple(samples), overflows))
        self.frames += 1
        return FrameSummary(
            index=self.frames - 1,
            t=t,
            cached=self.view.cached,
            changed=paths,
            items=len(items),
            overflows=overflows,
        )


async def record(
    duet: _abc.Duet,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    duration: float | None = None,
    interval: float = 1.0,
    regions_per_file: int = 32,
    on_frame: Callable[[FrameSummary], object] | None = None,
    stop: anyio.Event | None = None,
) -> RecordSummary:
    """Record the residency of the tree under ``root`` into the file ``out``.

    Runs until ``duration`` seconds have passed or ``stop`` is set, then takes a last frame;
    if cancelled instead, it ends without that frame. Either way the file is completed with
    its end record and closed.

    Args:
        duet: the framework (embedded, or a daemon's client) to register the task with.
        root: the directory to record.
        out: the recording file to write (replaced if it exists).
        duration: seconds to record; None records until cancelled.
        interval: seconds between two frames.
        regions_per_file: the most regions a file is cut into (its resolution in a heatmap).
        on_frame: called with a :class:`FrameSummary` after each frame is written.
        stop: set it to end the recording early (with a last frame taken at once).

    Returns:
        What was recorded.

    Raises:
        ValueError: ``interval``, ``duration`` or ``regions_per_file`` is out of range.
        OSError: ``root`` cannot be watched or ``out`` cannot be written.
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive, not {interval}")
    if duration is not None and not duration > 0:
        raise ValueError(f"duration must be positive, not {duration}")
    if regions_per_file < 1:
        raise ValueError(f"regions_per_file must be at least 1, not {regions_per_file}")
    async with duet.register("record", _MASK, os.fspath(root)) as task:
        walked = await anyio.to_thread.run_sync(_walk, task.path)
        header = Header(
            root=task.path,
            page_size=_kernel.PAGE_SIZE,
            interval=interval,
            started=time.time(),
            regions_per_file=regions_per_file,
            sources=duet.source_names,
        )
        start = anyio.current_time()
        scan_ended: list[float] = []

        async def mark_scanned() -> None:
            await task.wait_scanned()
            scan_ended.append(anyio.current_time() - start)

        writer = RecordWriter(out, header)
        recorder = _Recorder(task, writer, regions_per_file)
        try:
            for path, dev, ino, pages in walked:
                recorder.declare((dev, ino), path, pages)
            async with anyio.create_task_group() as group:
                group.start_soon(mark_scanned)
                while True:
                    due = start + (recorder.frames + 1) * interval
                    last = duration is not None and due >= start + duration
                    if duration is not None:
                        due = min(due, start + duration)
                    if stop is None:
                        await anyio.sleep_until(due)
                    else:
                        with anyio.move_on_after(due - anyio.current_time()):
                            await stop.wait()
                    elapsed = anyio.current_time() - start
                    scanned = scan_ended.pop() if scan_ended else None
                    summary = await recorder.frame(elapsed, scanned)
                    if on_frame is not None:
                        on_frame(summary)
                    if last or (stop is not None and stop.is_set()):
                        break
                group.cancel_scope.cancel()
        finally:
            try:
                writer.end(anyio.current_time() - start, recorder.frames)
            finally:
                writer.close()
    return RecordSummary(
        path=os.fspath(out),
        frames=recorder.frames,
        files=len(recorder.declared),
        duration=anyio.current_time() - start,
        items=recorder.items,
    )
