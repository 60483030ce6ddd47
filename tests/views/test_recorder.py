"""``record`` against the real kernel: a scripted workload, and what the recording says of it.

The workload reads half of one file, evicts it, then reads another. The heatmap's cells must
show exactly that, the PNG must draw it, and the working-set sizes must equal cachestat's
sums taken while recording (the independent oracle).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import anyio
import matplotlib.image
import pytest
from frameworks import Frameworks
from pagecache import read_pages, write_clean

from aioduet import Event, Item, Uuid, _kernel
from aioduet.views import (
    Activity,
    FrameSummary,
    Header,
    RecordWriter,
    heatmap,
    heatmap_figure,
    read_recording,
    record,
    working_set,
)
from aioduet.views._recorder import _Recorder

pytestmark = [pytest.mark.anyio, pytest.mark.kernel]

PAGES = 256  # per file: 32 regions of 8 pages, so 8-page columns meet region boundaries


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the recorder's loop logic is the task API's, tested on every backend


def _cached(*paths: Path) -> int:
    total = 0
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            total += _kernel.cachestat(fd).cache
        finally:
            os.close(fd)
    return total


class _Watcher:
    """Follows the frames as they are written; waits for a state of the files."""

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.files = files
        self.frames: list[FrameSummary] = []
        self.state: dict[str, int] = {}
        self.oracle: list[tuple[int, int]] = []  # (frame index, cachestat pages) after it
        self._new = anyio.Event()

    def on_frame(self, frame: FrameSummary) -> None:
        self.oracle.append((frame.index, _cached(*self.files)))
        self.frames.append(frame)
        self.state.update(frame.changed)
        self._new.set()
        self._new = anyio.Event()

    async def until(self, condition: Callable[[dict[str, int]], bool]) -> int:
        """Wait (10 s at most) for a frame after which ``condition(state)`` holds."""
        with anyio.fail_after(10):
            while not (self.frames and condition(self.state)):
                await self._new.wait()
        return self.frames[-1].index


async def test_a_scripted_workload_is_what_the_heatmap_shows(
    ext4_dir: Path, frameworks: Frameworks
) -> None:
    a = write_clean(ext4_dir / "tree" / "a.bin", PAGES)
    b = write_clean(ext4_dir / "tree" / "b.bin", PAGES)
    out = ext4_dir / "run.rec"
    watcher = _Watcher((a, b))
    stop = anyio.Event()
    async with frameworks.open(interval=0.1) as duet, anyio.create_task_group() as group:
        group.start_soon(
            lambda: record(duet, a.parent, out, interval=0.1, on_frame=watcher.on_frame, stop=stop)
        )
        await watcher.until(lambda state: True)
        assert read_pages(a, 0, PAGES // 2) == PAGES // 2
        half = await watcher.until(lambda s: s.get("a.bin") == PAGES // 2)
        fd = os.open(a, os.O_RDONLY)
        try:
            _kernel.evict(fd)
        finally:
            os.close(fd)
        evicted = await watcher.until(lambda s: s.get("a.bin") == 0)
        assert read_pages(b) == PAGES
        other = await watcher.until(lambda s: s.get("b.bin") == PAGES and s.get("a.bin") == 0)
        stop.set()

    recording = read_recording(out)
    assert len(recording.frames) == len(watcher.frames)
    assert [f.path for f in recording.paths()] == ["a.bin", "b.bin"]

    cells = heatmap(recording, columns=2 * PAGES // 8)
    assert len(cells.values) == len(recording.frames)
    a_first, a_second = range(0, 16), range(16, 32)
    b_all = range(32, 64)
    assert [cells.values[half][c] for c in a_first] == pytest.approx([1.0] * 16)
    assert [cells.values[half][c] for c in [*a_second, *b_all]] == pytest.approx([0.0] * 48)
    assert cells.values[evicted] == pytest.approx([0.0] * 64)
    assert [cells.values[other][c] for c in b_all] == pytest.approx([1.0] * 32)
    assert [cells.values[other][c] for c in [*a_first, *a_second]] == pytest.approx([0.0] * 32)
    assert cells.column("b.bin", 0) == 32

    # The PNG draws those cells: a cached cell in the colour of 1.0, an empty one in 0.0's.
    figure = heatmap_figure(cells)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    buffer.seek(0)
    image = matplotlib.image.imread(buffer)
    assert image.shape[:2] == (450, 800)
    axes = figure.axes[0]
    colormap = axes.images[0].get_cmap()
    row_seconds = cells.ends[-1] / len(cells.values)
    mib = cells.page_size / (1 << 20)

    def pixel(row: int, page: int) -> tuple[float, ...]:
        x, y = axes.transData.transform(((row + 0.5) * row_seconds, (page + 0.5) * mib))
        return tuple(image[image.shape[0] - int(y) - 1, int(x)][:3])

    assert pixel(half, 8) == pytest.approx(colormap(1.0)[:3], abs=0.02)
    assert pixel(half, PAGES - 8) == pytest.approx(colormap(0.0)[:3], abs=0.02)
    assert pixel(other, PAGES + 100) == pytest.approx(colormap(1.0)[:3], abs=0.02)

    # report wss: each cachestat sum, taken just after a frame, is that frame's total or (if
    # an item was still on its way) the next one's.
    wss = working_set(recording)
    page = recording.header.page_size
    for index, pages in watcher.oracle:
        nearby = wss.cached[index : index + 2]
        assert pages * page in nearby, (index, pages, nearby)
    assert max(wss.cached) >= PAGES * page


class _ScriptedTask:
    """Just what the recorder asks of a task: poll() gives the next scripted batch."""

    def __init__(self, root: Path, batches: list[list[Item]]) -> None:
        self.path = str(root)
        self._batches = batches

    async def poll(self, max_items: int) -> list[Item]:
        return self._batches.pop(0) if self._batches else []

    async def get_path(self, uuid: Uuid) -> str:
        return f"{self.path}/ino{uuid.ino}"


async def test_an_inode_number_reused_mid_recording_still_reads_back(tmp_path: Path) -> None:
    # The view starts a reused inode number (a new generation) afresh: the activity the
    # recorder writes is counted from that new start, never negative (which no reader takes).
    old, new = Uuid(1, 10, 1), Uuid(1, 10, 2)
    task = _ScriptedTask(
        tmp_path,
        [[Item(old, 0, 8, Event.ADDED)], [], [Item(new, 0, 2, Event.ADDED)], []],
    )
    out = tmp_path / "r.rec"
    header = Header(str(tmp_path), 4096, 1.0, 0.0, regions_per_file=4)
    with RecordWriter(out, header) as writer:
        recorder = _Recorder(task, writer, 4)  # type: ignore[arg-type]
        await recorder.frame(1.0, None)
        second = await recorder.frame(2.0, None)
        writer.end(2.0, recorder.frames)
    assert second.changed == {"ino10": 2}
    recording = read_recording(out)
    (first_sample,), (second_sample,) = (f.samples for f in recording.frames)
    assert first_sample.activity == Activity(added=8)
    assert second_sample.activity == Activity(added=2)
