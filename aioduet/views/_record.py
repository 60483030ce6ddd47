"""The recording file format of ``aioduet record``, version 1: writing and reading it.

A recording is a gzip-compressed text file of JSON objects, one per line (read it with
``zcat``). The first line is the header; then file declarations, frames and a scan mark in
the order they happened; the last line is the end record. Frames are deltas: a frame lists
only the files that changed since the previous frame, each with its full list of per-region
cached page counts. docs/commands/record.md describes every field.

::

    {"format": "aioduet-record", "version": 1, "root": "/data", "page_size": 4096,
     "interval": 1.0, "started": 1795000000.0, "regions_per_file": 32, "sources": [...]}
    {"file": 0, "path": "a.bin", "pages": 256, "region_pages": 8}
    {"frame": 0, "t": 1.0, "files": [[0, [8, 8, 0, ...], 0, [16, 0, 0, 0]]], "overflows": 0}
    {"scanned": 1.2}
    {"end": 60.0, "frames": 60}

In a frame's entry ``[id, regions, dirty, [added, removed, dirtied, flushed]]``, ``regions[i]``
counts the cached pages among pages ``i * region_pages`` to ``(i + 1) * region_pages - 1``,
``dirty`` is the file's dirty pages, and the four numbers count the pages that items moved
since the file's previous entry (any such movement gives the file an entry). A file is
declared again (same id) when it grows past its declared size; the new ``region_pages``
applies from then on.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import math
import os
import zlib
from collections.abc import Iterator
from typing import Any, TextIO

import attrs

from ..errors import RecordError
from ._residency import Activity

__all__ = [
    "FORMAT",
    "VERSION",
    "FileSample",
    "Frame",
    "Header",
    "RecordWriter",
    "RecordedFile",
    "Recording",
    "read_recording",
    "region_pages_for",
]

FORMAT = "aioduet-record"
"""The header's ``format`` value."""
VERSION = 1
"""The format version this module writes and reads."""

_HEADER_LIMIT = 1 << 16


def region_pages_for(pages: int, regions: int) -> int:
    """Pages per region for a file of ``pages`` pages cut into at most ``regions`` regions.

    A power of two, so that the regions of a file that grows can be merged by halving.
    """
    wanted = max(1, math.ceil(pages / regions))
    return 1 << (wanted - 1).bit_length()


@attrs.frozen
class Header:
    """What a recording is of."""

    root: str
    """The recorded directory."""
    page_size: int
    """Bytes per page."""
    interval: float
    """Seconds between two frames."""
    started: float
    """When the recording began (seconds since the epoch)."""
    regions_per_file: int
    """The most regions a file is cut into when declared."""
    sources: tuple[str, ...] = ()
    """The sources of the framework that recorded (empty over a daemon that did not say)."""


@attrs.frozen
class RecordedFile:
    """A file of the recording, as last declared."""

    id: int
    """The number frames use for it."""
    path: str
    """Its path relative to the root (the last one seen, if it was renamed)."""
    pages: int
    """Its size in pages (the largest declared)."""
    region_pages: int
    """Pages per region (of the last declaration)."""


@attrs.frozen
class FileSample:
    """One file in one frame: its residency then, and the activity since the frame before."""

    file: int
    """The file's id."""
    region_pages: int
    """Pages per region, from the file's declaration in force."""
    regions: tuple[int, ...]
    """Cached pages per region."""
    dirty: int
    """Dirty pages."""
    activity: Activity
    """Pages items moved since the previous frame."""

    @property
    def cached(self) -> int:
        """Cached pages of the file."""
        return sum(self.regions)


@attrs.frozen
class Frame:
    """One sample of the recording: the files that changed since the previous frame."""

    index: int
    """0 for the first frame."""
    t: float
    """Seconds since the recording began."""
    samples: tuple[FileSample, ...]
    """The changed files."""
    overflows: int = 0
    """OVERFLOW items since the previous frame (observations were lost and rescanned)."""


@attrs.frozen
class Recording:
    """A whole recording, read back by :func:`read_recording`."""

    header: Header
    files: dict[int, RecordedFile]
    """Every declared file, by id."""
    frames: tuple[Frame, ...]
    scanned: float | None
    """When the task's registration scan ended (seconds since the start), if it did."""
    duration: float
    """Seconds from the start to the end record."""

    def states(self) -> Iterator[tuple[Frame, dict[int, FileSample]]]:
        """Each frame with the latest sample of every file up to it (one dict, updated).

        The dict is the same object each time, changed in place: copy what you keep.
        """
        latest: dict[int, FileSample] = {}
        for frame in self.frames:
            for sample in frame.samples:
                latest[sample.file] = sample
            yield frame, latest

    def paths(self) -> list[RecordedFile]:
        """The files in path order."""
        return sorted(self.files.values(), key=lambda f: f.path)


class RecordWriter:
    """Writes a recording; use it as a context manager, and call :meth:`end` when done.

    Without :meth:`end` the file stays without its end record, and reading it says it was
    cut short.
    """

    def __init__(self, path: str | os.PathLike[str], header: Header) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115 - closed by close(), as a stream is
        try:
            # mtime=0: the same recording gives the same bytes (the header has the time).
            self._zip = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
            self._out: TextIO = io.TextIOWrapper(self._zip, encoding="utf-8", newline="\n")
        except BaseException:
            self._raw.close()
            raise
        self._line(
            {
                "format": FORMAT,
                "version": VERSION,
                "root": header.root,
                "page_size": header.page_size,
                "interval": header.interval,
                "started": header.started,
                "regions_per_file": header.regions_per_file,
                "sources": list(header.sources),
            },
            flush=True,
        )

    def _line(self, record: dict[str, Any], *, flush: bool = False) -> None:
        self._out.write(json.dumps(record, separators=(",", ":")))
        self._out.write("\n")
        if flush:
            # A sync flush ends a deflate block on a byte boundary: a recording whose writer
            # is killed keeps every frame written so far, and reads as cut short after them.
            self._out.flush()
            self._zip.flush(zlib.Z_SYNC_FLUSH)
            self._raw.flush()

    def declare(self, file: RecordedFile) -> None:
        """Declare a file, or declare it again with a new size, path or region size."""
        self._line(
            {
                "file": file.id,
                "path": file.path,
                "pages": file.pages,
                "region_pages": file.region_pages,
            }
        )

    def frame(self, frame: Frame) -> None:
        """Write a frame (its samples' ``region_pages`` must match the declarations)."""
        self._line(
            {
                "frame": frame.index,
                "t": round(frame.t, 6),
                "files": [
                    [s.file, list(s.regions), s.dirty, s.activity.as_list()] for s in frame.samples
                ],
                "overflows": frame.overflows,
            },
            flush=True,
        )

    def scanned(self, t: float) -> None:
        """Mark the end of the registration scan, ``t`` seconds after the start."""
        self._line({"scanned": round(t, 6)})

    def end(self, t: float, frames: int) -> None:
        """Write the end record: the recording is complete."""
        self._line({"end": round(t, 6), "frames": frames})

    def close(self) -> None:
        """Flush and close the file."""
        try:
            self._out.close()
        finally:
            self._raw.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Malformed(Exception):
    """A line breaks the format; the reader adds the file name and line number."""


def _fail(path: str, problem: str) -> RecordError:
    return RecordError(f"{path}: {problem}")


def _int(record: dict[str, Any], key: str, minimum: int = 0) -> int:
    value = record.get(key)
    if type(value) is not int or value < minimum:
        raise _Malformed(f"{key!r} must be an integer of at least {minimum}, not {value!r}")
    return value


def _number(record: dict[str, Any], key: str) -> float:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Malformed(f"{key!r} must be a number, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise _Malformed(f"{key!r} must be a non-negative number, not {value!r}")
    return float(value)


def _counts(value: object, length: int) -> list[int]:
    if not isinstance(value, list) or len(value) != length:
        raise _Malformed(f"expected a list of {length} counts, not {value!r}")
    if not all(type(v) is int and v >= 0 for v in value):
        raise _Malformed(f"counts must be non-negative integers, not {value!r}")
    return value


def _object(line: bytes) -> dict[str, Any]:
    record = json.loads(line)
    if not isinstance(record, dict):
        raise _Malformed("a line must be a JSON object")
    return record


class _Reader:
    """Parses the lines of a recording, keeping the declarations in force."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.header: Header | None = None
        self.files: dict[int, RecordedFile] = {}
        self.frames: list[Frame] = []
        self.scanned: float | None = None
        self.duration: float | None = None
        self.number = 0
        """The line being parsed (1 first)."""

    def lines(self, unzipped: gzip.GzipFile) -> None:
        """Parse every line; RecordError names the first one that breaks the format."""
        # A foreign file's first "line" may be huge: the header is short.
        first = unzipped.readline(_HEADER_LIMIT)
        for self.number, line in enumerate(itertools.chain([first], unzipped), start=1):
            if not line:
                break
            foreign = _fail(self.path, "not an aioduet recording (no aioduet-record header)")
            if not line.endswith(b"\n"):
                if self.header is None:
                    raise foreign
                raise _fail(
                    self.path,
                    f"truncated: line {self.number} is incomplete ({len(self.frames)} frames"
                    " read; the recording was cut short)",
                )
            try:
                self.line(_object(line))
            except RecordError:  # already says what is wrong (foreign, version)
                raise
            except (_Malformed, ValueError) as exc:
                if self.header is None:
                    raise foreign from None
                raise _fail(self.path, f"line {self.number}: {exc}") from None

    def line(self, record: dict[str, Any]) -> None:
        if self.header is None:
            self._header(record)
        elif self.duration is not None:
            raise _Malformed("a line follows the end record")
        elif "file" in record:
            self._file(record)
        elif "frame" in record:
            self._frame(record)
        elif "scanned" in record:
            self.scanned = _number(record, "scanned")
        elif "end" in record:
            self.duration = _number(record, "end")
            if _int(record, "frames") != len(self.frames):
                raise _Malformed(
                    f"the end record counts {record['frames']} frames, the file has"
                    f" {len(self.frames)}"
                )
        else:
            raise _Malformed(f"unknown record with keys {sorted(record)}")

    def _header(self, record: dict[str, Any]) -> None:
        if record.get("format") != FORMAT:
            raise _fail(self.path, "not an aioduet recording (no aioduet-record header)")
        version = record.get("version")
        if version != VERSION:
            raise _fail(
                self.path,
                f"recording format version {version!r} is not supported (this aioduet reads"
                f" version {VERSION})",
            )
        sources = record.get("sources", [])
        if not isinstance(record.get("root"), str) or not isinstance(sources, list):
            raise _Malformed("the header's root must be a string and sources a list")
        self.header = Header(
            root=record["root"],
            page_size=_int(record, "page_size", 1),
            interval=_number(record, "interval"),
            started=_number(record, "started"),
            regions_per_file=_int(record, "regions_per_file", 1),
            sources=tuple(str(s) for s in sources),
        )

    def _file(self, record: dict[str, Any]) -> None:
        if not isinstance(record.get("path"), str):
            raise _Malformed(f"a file's path must be a string, not {record.get('path')!r}")
        file_id = _int(record, "file")
        pages = _int(record, "pages")
        known = self.files.get(file_id)
        self.files[file_id] = RecordedFile(
            id=file_id,
            path=record["path"],
            pages=max(pages, known.pages if known else 0),
            region_pages=_int(record, "region_pages", 1),
        )

    def _frame(self, record: dict[str, Any]) -> None:
        index = _int(record, "frame")
        if index != len(self.frames):
            raise _Malformed(f"frame {index} where frame {len(self.frames)} was due")
        t = _number(record, "t")
        if self.frames and t < self.frames[-1].t:
            raise _Malformed(f"frame {index} goes back in time ({t} s)")
        entries = record.get("files")
        if not isinstance(entries, list):
            raise _Malformed("a frame's files must be a list")
        samples = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 4 or type(entry[0]) is not int:
                raise _Malformed(f"a frame entry is [id, regions, dirty, activity], not {entry!r}")
            file = self.files.get(entry[0])
            if file is None:
                raise _Malformed(f"frame {index} names file {entry[0]}, never declared")
            if not isinstance(entry[1], list):
                raise _Malformed(f"file {file.id}'s regions must be a list")
            regions = _counts(entry[1], len(entry[1]))
            if len(regions) > max(1, math.ceil(file.pages / file.region_pages)):
                raise _Malformed(f"file {file.id} has more regions than its declared pages")
            if any(count > file.region_pages for count in regions):
                raise _Malformed(f"file {file.id} has a region with more than its pages")
            if type(entry[2]) is not int or entry[2] < 0:
                raise _Malformed(f"file {file.id}'s dirty pages must be a non-negative integer")
            samples.append(
                FileSample(
                    file=file.id,
                    region_pages=file.region_pages,
                    regions=tuple(regions),
                    dirty=entry[2],
                    activity=Activity(*_counts(entry[3], 4)),
                )
            )
        self.frames.append(Frame(index, t, tuple(samples), overflows=_int(record, "overflows")))


def read_recording(path: str | os.PathLike[str]) -> Recording:
    """Read a whole recording written by ``aioduet record`` (or :class:`RecordWriter`).

    Raises:
        aioduet.RecordError: the file is not a recording, is of another format version, is
            malformed, or was cut short (no end record); the message is one line.
        OSError: the file cannot be opened.
    """
    name = os.fspath(path)
    reader = _Reader(name)
    with open(name, "rb") as raw:
        magic = raw.read(2)
        if not magic:
            raise _fail(name, "empty: no aioduet-record header (the recording was cut short)")
        if magic != b"\x1f\x8b":
            raise _fail(name, "not an aioduet recording (not gzip-compressed)")
        raw.seek(0)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                reader.lines(unzipped)
        except EOFError:
            raise _fail(
                name,
                f"truncated: the compressed data ends after {len(reader.frames)} frames (the"
                " recording was cut short)",
            ) from None
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise _fail(
                name, f"corrupt compressed data after line {reader.number}: {exc}"
            ) from None
    if reader.header is None:
        raise _fail(name, "empty: no aioduet-record header")
    if reader.duration is None:
        raise _fail(
            name,
            f"truncated: no end record after {len(reader.frames)} frames (the recording was"
            " cut short)",
        )
    return Recording(
        header=reader.header,
        files=reader.files,
        frames=tuple(reader.frames),
        scanned=reader.scanned,
        duration=reader.duration,
    )
