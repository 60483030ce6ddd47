"""The working-set size over time, and per-file summaries, of a recording.

``wss`` follows DAMON's ``damo report wss``: the cached bytes of the whole tree at each frame,
and their distribution (percentiles over the frames). ``files`` sums each file up: its size,
what was cached at the end, at most and on average, and the pages its items moved.
"""

from __future__ import annotations

import attrs

from ._record import Recording
from ._residency import Activity

__all__ = ["FileReport", "WorkingSet", "file_reports", "working_set"]

#: The percentiles ``report wss`` prints, as damo does.
PERCENTILES = (0, 10, 25, 50, 75, 90, 100)


@attrs.frozen
class WorkingSet:
    """Cached bytes of the recorded tree over time."""

    times: tuple[float, ...]
    """Each frame's time (seconds since the start)."""
    cached: tuple[int, ...]
    """Cached bytes at each frame."""

    def percentile(self, p: float) -> int:
        """The ``p``-th percentile of the cached bytes over the frames (nearest rank)."""
        if not 0 <= p <= 100:
            raise ValueError(f"a percentile is between 0 and 100, not {p}")
        if not self.cached:
            raise ValueError("the recording has no frames")
        ordered = sorted(self.cached)
        rank = max(1, -(-len(ordered) * p // 100))
        return ordered[int(rank) - 1]

    def as_json(self) -> dict[str, object]:
        """``{"samples": [[t, bytes], ...], "percentiles": {"0": bytes, ...}}``."""
        return {
            "samples": [[t, b] for t, b in zip(self.times, self.cached, strict=True)],
            "percentiles": {str(p): self.percentile(p) for p in PERCENTILES} if self.cached else {},
        }


def working_set(recording: Recording) -> WorkingSet:
    """The cached bytes of the whole tree at each frame of ``recording``."""
    page_size = recording.header.page_size
    per_file: dict[int, int] = {}
    total = 0
    cached = []
    for frame in recording.frames:
        for sample in frame.samples:
            now = sample.cached
            total += now - per_file.get(sample.file, 0)
            per_file[sample.file] = now
        cached.append(total * page_size)
    return WorkingSet(tuple(f.t for f in recording.frames), tuple(cached))


@attrs.frozen
class FileReport:
    """One file over a recording (counts in pages)."""

    path: str
    """Relative to the recorded root."""
    pages: int
    """Its size (the largest declared)."""
    cached: int
    """Cached at the last frame."""
    peak: int
    """Cached at most, at any frame."""
    mean: float
    """Cached on average over all frames."""
    dirty: int
    """Dirty at the last frame."""
    activity: Activity
    """Pages its items moved over the whole recording."""

    def as_json(self, page_size: int) -> dict[str, object]:
        """A JSON object; sizes in pages and, for size and cached, in bytes too."""
        return {
            "path": self.path,
            "pages": self.pages,
            "bytes": self.pages * page_size,
            "cached": self.cached,
            "cached_bytes": self.cached * page_size,
            "peak": self.peak,
            "mean": round(self.mean, 3),
            "dirty": self.dirty,
            "added": self.activity.added,
            "removed": self.activity.removed,
            "dirtied": self.activity.dirtied,
            "flushed": self.activity.flushed,
        }


def file_reports(recording: Recording) -> list[FileReport]:
    """One :class:`FileReport` per recorded file, in path order."""
    frames = len(recording.frames)
    cached: dict[int, int] = {}
    dirty: dict[int, int] = {}
    peak: dict[int, int] = {}
    area: dict[int, float] = {}  # sum over frames of cached pages
    since: dict[int, int] = {}  # the frame from which cached[id] holds
    activity: dict[int, Activity] = {}
    for frame in recording.frames:
        for sample in frame.samples:
            key = sample.file
            area[key] = area.get(key, 0.0) + cached.get(key, 0) * (frame.index - since.get(key, 0))
            cached[key] = sample.cached
            since[key] = frame.index
            dirty[key] = sample.dirty
            peak[key] = max(peak.get(key, 0), sample.cached)
            activity[key] = activity.get(key, Activity()) + sample.activity
    reports = []
    for file in recording.paths():
        total = area.get(file.id, 0.0) + cached.get(file.id, 0) * (frames - since.get(file.id, 0))
        reports.append(
            FileReport(
                path=file.path,
                pages=file.pages,
                cached=cached.get(file.id, 0),
                peak=peak.get(file.id, 0),
                mean=total / frames if frames else 0.0,
                dirty=dirty.get(file.id, 0),
                activity=activity.get(file.id, Activity()),
            )
        )
    return reports
