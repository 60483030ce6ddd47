"""A synthetic recording of two files over three frames, for the views' unit tests."""

from __future__ import annotations

from aioduet.views import Activity, FileSample, Frame, Header, RecordedFile, Recording

HEADER = Header(root="/r", page_size=4096, interval=1.0, started=0.0, regions_per_file=4)
# b.bin sorts after a.bin although its id is lower: the axis is in path order.
FILES = {
    0: RecordedFile(0, "b.bin", pages=8, region_pages=2),
    1: RecordedFile(1, "a.bin", pages=4, region_pages=1),
}


def sample(file: int, regions: tuple[int, ...], dirty: int = 0, **moved: int) -> FileSample:
    return FileSample(file, FILES[file].region_pages, regions, dirty, Activity(**moved))


def recording(*frames: tuple[FileSample, ...]) -> Recording:
    return Recording(
        header=HEADER,
        files=FILES,
        frames=tuple(Frame(i, float(i + 1), s) for i, s in enumerate(frames)),
        scanned=None,
        duration=float(len(frames)),
    )


RUN = recording(
    (sample(1, (1, 1, 0, 0), added=2),),  # a.bin's first half
    (sample(0, (2, 2, 2, 2), added=8),),  # all of b.bin too
    (sample(1, (0, 0, 0, 0), removed=2), sample(0, (0, 0, 0, 1), removed=7, dirty=1)),
)
