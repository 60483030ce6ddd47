"""record_workload.py: record a scripted workload with aioduet and draw its heatmap.

Creates four files in a directory (written, fsynced and evicted, so nothing is cached), opens
an embedded framework and records the directory (``aioduet.views.record``, as
``aioduet record`` does) while a workload runs in phases, an idle pause before each:

1. read ``1-sequential.bin`` from start to end;
2. read the first half of ``2-half.bin``;
3. evict ``1-sequential.bin`` (``posix_fadvise(POSIX_FADV_DONTNEED)``);
4. read ``3-random.bin`` at random offsets, 64 KiB at a time, for ``--random-seconds``;
5. write the middle half of ``4-written.bin`` and fsync it.

Each phase waits until the recording shows its effect (a frame with the file's new cached
page count), bounded by ``--timeout``. Then the recording is read back, the heatmap is drawn
into ``--png`` (time across, file space up) and printed as text, 80 columns wide::

    python examples/record_workload.py --output workload.jsonl.gz --png heatmap.png
    aioduet report files workload.jsonl.gz

Progress goes to stderr, the text heatmap to stdout. Exit status 0, 1 when a phase did not
show in the recording in time, 2 for bad arguments. docs/commands/report.md shows the
picture this draws.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Callable

import anyio

import aioduet
from aioduet.views import (
    FrameSummary,
    RecordSummary,
    heatmap,
    heatmap_text,
    read_recording,
    record,
    save_heatmap,
)

PROG = "record_workload.py"
FILES = ("1-sequential.bin", "2-half.bin", "3-random.bin", "4-written.bin")
CHUNK = 64 * 1024  # the random reads' size
TEXT_COLUMNS = 80 - 14  # the text map's columns: its lines are 80 characters wide
PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--directory",
        default=None,
        help="where to create the files (default: a fresh directory under /tmp, removed after)",
    )
    parser.add_argument(
        "--output", default="workload.jsonl.gz", help="the recording to write (default %(default)s)"
    )
    parser.add_argument(
        "--png", default="workload-heatmap.png", help="the heatmap image (default %(default)s)"
    )
    parser.add_argument("--size-mib", type=int, default=8, help="size of each file (default 8)")
    parser.add_argument(
        "--interval", type=float, default=0.2, help="seconds between two frames (default 0.2)"
    )
    parser.add_argument(
        "--idle", type=float, default=1.5, help="seconds of idle time before each phase"
    )
    parser.add_argument(
        "--random-seconds", type=float, default=3.0, help="how long the random reads last"
    )
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a phase may take to show"
    )
    args = parser.parse_args(argv)
    if args.size_mib < 1 or not args.interval > 0 or args.idle < 0 or args.random_seconds < 0:
        parser.error("--size-mib must be at least 1, --interval positive, the others >= 0")
    return args


def create(path: str, size: int) -> None:
    """Write ``size`` random bytes, fsync them and evict them: the file starts uncached."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in range(0, size, 1 << 20):
            os.write(fd, os.urandom(min(1 << 20, size - offset)))
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Progress:
    """What the recording has shown so far: each file's cached pages, by relative path."""

    def __init__(self) -> None:
        self.cached: dict[str, int] = {}
        self.frames = 0
        self._changed = anyio.Event()

    def on_frame(self, frame: FrameSummary) -> None:
        self.cached.update(frame.changed)
        self.frames += 1
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait for a frame after which ``condition()`` holds."""
        while not condition():
            await self._changed.wait()

    async def idle(self, seconds: float, interval: float) -> None:
        """Let the frames of ``seconds`` of idle time go by."""
        end = self.frames + round(seconds / interval)
        while self.frames < end:
            await self._changed.wait()

    def pages(self, name: str) -> int:
        return self.cached.get(name, 0)


def read_range(path: str, start: int, length: int, *, readahead: bool = True) -> None:
    """Read ``length`` bytes from ``start``, 1 MiB at a time.

    Without ``readahead`` only the pages read come in: the kernel's readahead can reach far
    past the range (``/sys/block/*/queue/read_ahead_kb``, 8 MiB on some virtual disks).
    """
    with open(path, "rb", buffering=0) as f:
        if not readahead:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        f.seek(start)
        while length > 0:
            data = f.read(min(1 << 20, length))
            if not data:
                break
            length -= len(data)


def most(pages: int) -> int:
    """90% of ``pages``: the VM may evict a few pages before the frame that shows the rest."""
    return pages * 9 // 10


def evict(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def write_fsync(path: str, start: int, length: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(length), start)
        os.fsync(fd)
    finally:
        os.close(fd)


async def read_randomly(path: str, size: int, seconds: float) -> int:
    """Read 64 KiB chunks at random offsets for ``seconds``; returns the chunks read."""
    chunks = max(1, size // CHUNK)
    read: set[int] = set()
    fd = os.open(path, os.O_RDONLY)
    try:
        # No readahead: each read brings in its own 64 KiB and no more.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        with anyio.move_on_after(seconds):
            while True:
                chunk = random.randrange(chunks)
                os.pread(fd, CHUNK, chunk * CHUNK)
                read.add(chunk)
                await anyio.sleep(seconds / chunks)  # about as many reads as chunks in all
    finally:
        os.close(fd)
    return len(read)


async def workload(root: str, size: int, args: argparse.Namespace, progress: Progress) -> None:
    """The five phases, each after an idle pause and until the recording shows it."""
    one, two, three, four = (os.path.join(root, name) for name in FILES)
    pages = -(-size // PAGE)

    def log(message: str) -> None:
        print(f"{PROG}: frame {progress.frames}: {message}", file=sys.stderr, flush=True)

    async def shows(what: str, condition: Callable[[], bool]) -> None:
        try:
            with anyio.fail_after(args.timeout):
                await progress.wait_until(condition)
        except TimeoutError:
            raise TimeoutError(
                f"the recording did not show {what!r} in {args.timeout:g} s"
            ) from None

    async def phase(message: str, action: Callable[[], object], shown: Callable[[], bool]) -> None:
        await progress.idle(args.idle, args.interval)
        log(message)
        await anyio.to_thread.run_sync(action)
        await shows(message, shown)

    await phase(
        f"reading {FILES[0]}",
        lambda: read_range(one, 0, size),
        lambda: progress.pages(FILES[0]) >= most(pages),
    )
    await phase(
        f"reading the first half of {FILES[1]}",
        lambda: read_range(two, 0, size // 2, readahead=False),
        lambda: progress.pages(FILES[1]) >= most(pages // 2),
    )
    await phase(
        f"evicting {FILES[0]}",
        lambda: evict(one),
        lambda: progress.pages(FILES[0]) == 0,
    )

    await progress.idle(args.idle, args.interval)
    log(f"reading {FILES[2]} at random offsets for {args.random_seconds:g} s")
    chunks = await read_randomly(three, size, args.random_seconds)
    wanted = min(chunks * CHUNK // PAGE, pages)
    await shows(f"reading {FILES[2]}", lambda: progress.pages(FILES[2]) >= most(wanted))

    await phase(
        f"writing the middle half of {FILES[3]}",
        lambda: write_fsync(four, size // 4, size // 2),
        lambda: progress.pages(FILES[3]) >= most(pages // 2),
    )
    await progress.idle(args.idle, args.interval)
    log("done")


async def run(root: str, args: argparse.Namespace) -> RecordSummary:
    size = args.size_mib << 20
    for name in FILES:
        create(os.path.join(root, name), size)
    progress = Progress()
    stop = anyio.Event()
    summaries: list[RecordSummary] = []
    async with aioduet.open_duet(interval=args.interval) as duet:

        async def recorder() -> None:
            summaries.append(
                await record(
                    duet,
                    root,
                    args.output,
                    interval=args.interval,
                    on_frame=progress.on_frame,
                    stop=stop,
                )
            )

        async with anyio.create_task_group() as group:
            group.start_soon(recorder)
            try:
                await workload(root, size, args, progress)
            finally:
                stop.set()  # the recorder takes a last frame and completes the file
    return summaries[0]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    created = args.directory is None
    root = tempfile.mkdtemp(prefix="record-workload-", dir="/tmp") if created else args.directory
    os.makedirs(root, exist_ok=True)
    late: list[BaseException] = []
    try:
        summary = anyio.run(run, os.path.realpath(root), args)
    except* TimeoutError as group:  # raised in a task group, so it comes in a group
        late.extend(group.exceptions)
    finally:
        if created:
            shutil.rmtree(root, ignore_errors=True)
    if late:
        print(f"{PROG}: error: {late[0]}", file=sys.stderr)
        return 1
    print(
        f"{PROG}: recorded {summary.frames} frames over {summary.duration:.1f} s"
        f" into {args.output}",
        file=sys.stderr,
    )
    recording = read_recording(args.output)
    save_heatmap(
        heatmap(recording, columns=400),
        args.png,
        title=f"{PROG}: {len(FILES)} files of {args.size_mib} MiB",
    )
    print(f"{PROG}: wrote {args.png}", file=sys.stderr)
    print(heatmap_text(heatmap(recording, rows=40, columns=TEXT_COLUMNS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
