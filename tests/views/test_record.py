"""The recording format: what is written reads back, and every bad file gets a one-line error."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioduet import RecordError
from aioduet.views import (
    Activity,
    FileSample,
    Frame,
    Header,
    RecordedFile,
    RecordWriter,
    read_recording,
)
from aioduet.views._record import region_pages_for

HEADER = Header(
    root="/data", page_size=4096, interval=0.5, started=1.8e9, regions_per_file=4, sources=("x",)
)
A = RecordedFile(id=0, path="a.bin", pages=16, region_pages=4)
B = RecordedFile(id=1, path="sub/b.bin", pages=3, region_pages=1)


def write(path: Path, *, end: bool = True) -> Path:
    with RecordWriter(path, HEADER) as writer:
        writer.declare(A)
        writer.declare(B)
        writer.frame(
            Frame(0, 0.5, (FileSample(0, 4, (4, 2, 0, 0), 1, Activity(6, 0, 1, 0)),), overflows=0)
        )
        writer.scanned(0.7)
        writer.frame(
            Frame(
                1,
                1.0,
                (
                    FileSample(0, 4, (0, 0, 0, 0), 0, Activity(0, 6, 0, 1)),
                    FileSample(1, 1, (1, 1, 1), 0, Activity(3, 0, 0, 0)),
                ),
                overflows=2,
            )
        )
        if end:
            writer.end(1.2, 2)
    return path


def test_what_is_written_reads_back(tmp_path: Path) -> None:
    recording = read_recording(write(tmp_path / "r"))
    assert recording.header == HEADER
    assert recording.files == {0: A, 1: B}
    assert [f.path for f in recording.paths()] == ["a.bin", "sub/b.bin"]
    assert recording.scanned == 0.7
    assert recording.duration == 1.2
    assert [f.t for f in recording.frames] == [0.5, 1.0]
    assert recording.frames[1].overflows == 2
    assert recording.frames[0].samples[0].cached == 6
    assert recording.frames[1].samples[1].activity == Activity(3, 0, 0, 0)
    latest = [dict(state) for _, state in recording.states()]
    assert latest[0].keys() == {0}
    assert latest[1][0].cached == 0
    assert latest[1][1].cached == 3


def test_it_is_gzip_json_lines_with_a_version(tmp_path: Path) -> None:
    lines = gzip.decompress(write(tmp_path / "r").read_bytes()).decode().splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "aioduet-record"
    assert header["version"] == 1
    assert json.loads(lines[-1]) == {"end": 1.2, "frames": 2}


def test_a_file_grown_past_its_declaration_is_declared_again(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with RecordWriter(path, HEADER) as writer:
        writer.declare(B)
        writer.declare(RecordedFile(id=1, path="sub/b.bin", pages=8, region_pages=2))
        writer.frame(Frame(0, 0.5, (FileSample(1, 2, (2, 2, 1, 0), 0, Activity()),)))
        writer.end(0.5, 1)
    recording = read_recording(path)
    assert recording.files[1].pages == 8
    assert recording.frames[0].samples[0].region_pages == 2


def _error(path: Path) -> str:
    with pytest.raises(RecordError) as caught:
        read_recording(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.9, 0.99])
def test_a_truncated_recording_says_so(tmp_path: Path, cut: float) -> None:
    whole = write(tmp_path / "whole").read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(whole[: int(len(whole) * cut)])
    assert "truncated" in _error(path)


def test_a_recording_without_its_end_record_was_cut_short(tmp_path: Path) -> None:
    message = _error(write(tmp_path / "r", end=False))
    assert "truncated: no end record after 2 frames" in message


@given(cut=st.integers(min_value=0))
@settings(max_examples=60, deadline=None)
def test_any_truncation_is_an_error_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, cut: int
) -> None:
    where = tmp_path_factory.mktemp("cut")
    whole = write(where / "whole").read_bytes()
    path = where / "cut"
    path.write_bytes(whole[: cut % len(whole)])
    _error(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, world\n",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        gzip.compress(b'{"format": "something-else", "version": 1}\n'),
        gzip.compress(b"not json at all\n"),
        gzip.compress(bytes(range(256)) * 1000),
        gzip.compress(b"[1, 2, 3]\n"),
    ],
    ids=["empty", "text", "png", "other-json", "gzip-text", "gzip-binary", "json-list"],
)
def test_a_foreign_file_is_not_a_recording(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign"
    path.write_bytes(content)
    message = _error(path)
    assert "not an aioduet recording" in message or "empty" in message


def test_another_version_is_refused_by_number(tmp_path: Path) -> None:
    path = tmp_path / "v2"
    path.write_bytes(gzip.compress(b'{"format": "aioduet-record", "version": 2}\n'))
    assert "version 2 is not supported (this aioduet reads version 1)" in _error(path)


def _lines(tmp_path: Path, *extra: dict[str, object]) -> Path:
    header = {
        "format": "aioduet-record",
        "version": 1,
        "root": "/r",
        "page_size": 4096,
        "interval": 1.0,
        "started": 0.0,
        "regions_per_file": 4,
        "sources": [],
    }
    path = tmp_path / "r"
    text = "\n".join(json.dumps(record) for record in (header, *extra)) + "\n"
    path.write_bytes(gzip.compress(text.encode()))
    return path


DECLARE = {"file": 0, "path": "a", "pages": 4, "region_pages": 2}


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        (
            [{"frame": 0, "t": 1, "files": [[0, [1], 0, [0, 0, 0, 0]]], "overflows": 0}],
            "never declared",
        ),
        (
            [
                DECLARE,
                {"frame": 0, "t": 1, "files": [[0, [3, 0], 0, [0, 0, 0, 0]]], "overflows": 0},
            ],
            "more than its pages",
        ),
        (
            [
                DECLARE,
                {"frame": 0, "t": 1, "files": [[0, [1, 1, 1], 0, [0, 0, 0, 0]]], "overflows": 0},
            ],
            "more regions",
        ),
        ([DECLARE, {"frame": 1, "t": 1, "files": [], "overflows": 0}], "frame 0 was due"),
        (
            [
                {"frame": 0, "t": 2, "files": [], "overflows": 0},
                {"frame": 1, "t": 1, "files": [], "overflows": 0},
            ],
            "back in time",
        ),
        ([{"frame": 0, "t": -1, "files": [], "overflows": 0}], "non-negative"),
        ([{"end": 1, "frames": 3}], "counts 3 frames"),
        ([{"end": 1, "frames": 0}, {"scanned": 1}], "follows the end record"),
        ([{"mystery": 1}], "unknown record"),
        (
            [
                DECLARE,
                {"frame": 0, "t": 1, "files": [[0, [1, "x"], 0, [0, 0, 0, 0]]], "overflows": 0},
            ],
            "counts must be",
        ),
    ],
)
def test_a_malformed_line_is_named(
    tmp_path: Path, records: list[dict[str, object]], problem: str
) -> None:
    message = _error(_lines(tmp_path, *records))
    assert problem in message
    assert ": line " in message


@pytest.mark.parametrize(
    ("pages", "regions", "expected"), [(0, 32, 1), (1, 32, 1), (256, 32, 8), (257, 32, 16)]
)
def test_regions_are_a_power_of_two_of_pages(pages: int, regions: int, expected: int) -> None:
    assert region_pages_for(pages, regions) == expected
