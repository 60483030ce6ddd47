"""Heatmaps of a recording: time x file space x cached fraction, as DAMON's are for memory.

The file space lays the recorded files end to end in path order, each as long as its largest
size, so a column is a range of pages of one or a few neighbouring files. A cell is the mean
cached fraction of those pages over the frames of its row. Region counts are spread evenly over
their pages, which is exact where column and region boundaries meet and an average otherwise.
"""

from __future__ import annotations

import bisect
import math
import os
from typing import TYPE_CHECKING

import attrs

from .._units import format_size
from ..errors import AioduetError
from ._record import FileSample, Recording

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FileSpan", "Heatmap", "heatmap", "heatmap_figure", "heatmap_text", "save_heatmap"]

#: From not cached to wholly cached, in ten steps (a space is exactly 0).
_SHADES = " .:-=+*#%@"


@attrs.frozen
class FileSpan:
    """Where a file lies along the file-space axis."""

    path: str
    """Relative to the recorded root."""
    first: int
    """Its first page in the file space."""
    pages: int
    """Its length in pages."""


@attrs.frozen
class Heatmap:
    """Cached fractions, ``values[row][column]``: rows are time, columns file space."""

    values: tuple[tuple[float, ...], ...]
    """Mean cached fraction (0 to 1) of each cell."""
    ends: tuple[float, ...]
    """Each row's last frame time (seconds since the start); a row begins where the one
    before it ends (the first at 0)."""
    files: tuple[FileSpan, ...]
    """The files along the axis, in path order."""
    pages: int
    """Pages of the whole file space."""
    page_size: int
    """Bytes per page."""

    @property
    def columns(self) -> int:
        """Columns of the map."""
        return len(self.values[0]) if self.values else 0

    @property
    def pages_per_column(self) -> float:
        """How many pages of the file space one column stands for."""
        return self.pages / self.columns

    def span(self, path: str) -> FileSpan:
        """The file at ``path`` (relative to the root); KeyError if it was not recorded."""
        for span in self.files:
            if span.path == path:
                return span
        raise KeyError(path)

    def column(self, path: str, page: int) -> int:
        """The column holding page ``page`` of the file at ``path``."""
        span = self.span(path)
        if not 0 <= page < span.pages:
            raise IndexError(f"{path} has {span.pages} pages, not page {page}")
        return int((span.first + page) / self.pages_per_column)

    def row(self, t: float) -> int:
        """The row covering time ``t`` (seconds since the start)."""
        return min(bisect.bisect_left(self.ends, t), len(self.ends) - 1)


def _layout(recording: Recording) -> tuple[list[FileSpan], dict[int, FileSpan]]:
    spans, by_id, first = [], {}, 0
    for file in recording.paths():
        span = FileSpan(file.path, first, file.pages)
        spans.append(span)
        by_id[file.id] = span
        first += file.pages
    return spans, by_id


class _Projection:
    """Spreads a file's region counts over the columns they overlap."""

    def __init__(self, by_id: dict[int, FileSpan], width: float, columns: int) -> None:
        self._by_id = by_id
        self._width = width
        self._columns = columns
        self._cache: dict[tuple[int, int, int], list[list[tuple[int, float]]]] = {}

    def weights(self, sample: FileSample) -> list[list[tuple[int, float]]]:
        """For each region, ``(column, fraction of a column per cached page)`` pairs."""
        key = (sample.file, sample.region_pages, len(sample.regions))
        found = self._cache.get(key)
        if found is None:
            span = self._by_id[sample.file]
            found = []
            for i in range(len(sample.regions)):
                start = span.first + i * sample.region_pages
                end = span.first + min((i + 1) * sample.region_pages, span.pages)
                found.append(self._spread(start, end))
            self._cache[key] = found
        return found

    def _spread(self, start: float, end: float) -> list[tuple[int, float]]:
        if end <= start:
            return []
        pairs = []
        column = min(int(start / self._width), self._columns - 1)
        while column < self._columns and column * self._width < end:
            low = max(start, column * self._width)
            high = min(end, (column + 1) * self._width)
            if high > low:
                pairs.append((column, (high - low) / (end - start) / self._width))
            column += 1
        return pairs

    def add(self, row: list[float], sample: FileSample, sign: int) -> None:
        for count, pairs in zip(sample.regions, self.weights(sample), strict=True):
            if count:
                for column, weight in pairs:
                    row[column] += sign * count * weight


def heatmap(recording: Recording, *, rows: int | None = None, columns: int = 100) -> Heatmap:
    """The heatmap of a recording.

    Args:
        recording: as read by :func:`~aioduet.views.read_recording`.
        rows: time rows; frames are averaged in equal groups (default: one row per frame).
        columns: file-space columns (at most one per page).

    Raises:
        ValueError: the recording has no frames or no file pages, or a size is below 1.
    """
    if columns < 1 or (rows is not None and rows < 1):
        raise ValueError(f"rows and columns must be at least 1, not {rows} and {columns}")
    frames = recording.frames
    spans, by_id = _layout(recording)
    pages = sum(span.pages for span in spans)
    if not frames:
        raise ValueError("the recording has no frames")
    if not pages:
        raise ValueError("the recording's files have no pages")
    columns = min(columns, pages)
    rows = min(rows or len(frames), len(frames))
    projection = _Projection(by_id, pages / columns, columns)
    current = [0.0] * columns
    sums = [[0.0] * columns for _ in range(rows)]
    counts = [0] * rows
    ends = [0.0] * rows
    latest: dict[int, FileSample] = {}
    for frame in frames:
        for sample in frame.samples:
            old = latest.get(sample.file)
            if old is not None:
                projection.add(current, old, -1)
            projection.add(current, sample, +1)
            latest[sample.file] = sample
        row = frame.index * rows // len(frames)
        counts[row] += 1
        ends[row] = frame.t
        sums[row] = [a + b for a, b in zip(sums[row], current, strict=True)]
    values = tuple(
        # Rounded: the running sums leave residues like 1e-17 where a file was evicted.
        tuple(min(1.0, max(0.0, round(v / n, 9))) for v in total)
        for total, n in zip(sums, counts, strict=True)
    )
    return Heatmap(values, tuple(ends), tuple(spans), pages, recording.header.page_size)


def _shade(value: float) -> str:
    return " " if value <= 0 else _SHADES[max(1, math.ceil(value * (len(_SHADES) - 1)))]


def heatmap_text(heatmap: Heatmap, *, legend_files: int = 8) -> str:
    """The heatmap as text: a row per time row, a character per column (``' '`` to ``'@'``)."""
    lines = [
        f"time down, file space across ({format_size(heatmap.pages_per_column * heatmap.page_size)}"
        f" per column); cached: ' ' none, '{_SHADES[1]}' up to 1/9 ... '@' all",
        "  time (s) +" + "-" * heatmap.columns + "+",
    ]
    lines.extend(
        f"{end:10.2f} |" + "".join(_shade(v) for v in values) + "|"
        for end, values in zip(heatmap.ends, heatmap.values, strict=True)
    )
    lines.append("           +" + "-" * heatmap.columns + "+")
    shown = [s for s in heatmap.files if s.pages][:legend_files]
    for span in shown:
        first = int(span.first / heatmap.pages_per_column)
        last = int((span.first + span.pages - 1) / heatmap.pages_per_column)
        lines.append(
            f"  columns {first}-{last}: {span.path} ({format_size(span.pages * heatmap.page_size)})"
        )
    hidden = sum(1 for s in heatmap.files if s.pages) - len(shown)
    if hidden > 0:
        lines.append(f"  ... and {hidden} more files")
    return "\n".join(lines)


def heatmap_figure(heatmap: Heatmap, *, title: str | None = None) -> Figure:
    """The heatmap as a matplotlib figure: time across, file space up (as DAMON draws them).

    Raises:
        aioduet.AioduetError: matplotlib is not installed (``pip install 'aioduet[plot]'``).
    """
    try:
        from matplotlib.figure import Figure  # noqa: PLC0415 - optional, and slow to import
    except ImportError:
        raise AioduetError("PNG heatmaps need matplotlib: pip install 'aioduet[plot]'") from None
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    axes = figure.add_subplot()
    mib = heatmap.page_size / (1 << 20)
    image = axes.imshow(
        [list(column) for column in zip(*heatmap.values, strict=True)],
        aspect="auto",
        origin="lower",
        interpolation="nearest",
        cmap="inferno",
        vmin=0.0,
        vmax=1.0,
        extent=(0.0, heatmap.ends[-1], 0.0, heatmap.pages * mib),
    )
    figure.colorbar(image, ax=axes, label="cached fraction")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("file space (MiB, files in path order)")
    named = [s for s in heatmap.files if s.pages]
    if len(named) <= 64:  # more boundaries than that are a grey smear, and slow to draw
        for span in named[1:]:
            axes.axhline(span.first * mib, color="white", linewidth=0.4, alpha=0.6)
    if 0 < len(named) <= 12:
        right = axes.secondary_yaxis("right")
        right.set_yticks(
            [(s.first + s.pages / 2) * mib for s in named],
            labels=[os.path.basename(s.path) for s in named],
        )
    axes.set_title(title or "page-cache residency")
    return figure


def save_heatmap(
    heatmap: Heatmap, path: str | os.PathLike[str], *, dpi: int = 100, title: str | None = None
) -> None:
    """Render the heatmap to an image file (PNG, or any format matplotlib knows by suffix)."""
    heatmap_figure(heatmap, title=title).savefig(os.fspath(path), dpi=dpi)
