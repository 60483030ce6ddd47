"""examples/record_workload.py: a recorded workload, read back, and its heatmap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aioduet.views import Heatmap, heatmap, read_recording

pytestmark = pytest.mark.kernel

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "record_workload.py"
FILES = ["1-sequential.bin", "2-half.bin", "3-random.bin", "4-written.bin"]
TIMEOUT = 120  # seconds; a run with the sizes below takes about five


def cells(
    map_: Heatmap, row: int, path: str, first: int = 0, pages: int | None = None
) -> list[float]:
    """The cells of ``row`` over pages ``first`` to ``first + pages - 1`` of ``path``."""
    span = map_.span(path)
    last = span.pages - 1 if pages is None else first + pages - 1
    return list(map_.values[row][map_.column(path, first) : map_.column(path, last) + 1])


def fully_cached(values: list[float]) -> bool:
    """All cached but for a few pages (the VM here evicts idle pages on its own)."""
    return sum(values) / len(values) > 0.95 and min(values) > 0.8


def not_cached(values: list[float]) -> bool:
    return max(values) < 0.01


def test_record_workload(ext4_dir: Path) -> None:
    recording_path, png = ext4_dir / "workload.jsonl.gz", ext4_dir / "heatmap.png"
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            str(EXAMPLE),
            *("--directory", str(ext4_dir / "data")),
            *("--output", str(recording_path), "--png", str(png)),
            *("--size-mib", "1", "--interval", "0.1", "--idle", "0.3"),
            *("--random-seconds", "0.5", "--timeout", "20"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1-sequential.bin" in done.stdout  # the text heatmap's legend

    recording = read_recording(recording_path)
    assert sorted(f.path for f in recording.files.values()) == FILES
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # 4 files of 256 pages, 64 columns: 16 whole columns per file, one row per frame.
    map_ = heatmap(recording, columns=64)
    assert len(map_.values) == len(recording.frames)
    one = [cells(map_, row, FILES[0]) for row in range(len(map_.values))]
    assert not_cached(one[0])  # created evicted
    full = next((row for row, values in enumerate(one) if fully_cached(values)), None)
    assert full is not None, "no frame shows 1-sequential.bin wholly cached"
    assert any(not_cached(values) for values in one[full + 1 :]), "never evicted after"

    # Only the first half of 2-half.bin was read, without readahead.
    rows = range(len(map_.values))
    assert any(fully_cached(cells(map_, row, FILES[1], 0, 128)) for row in rows)
    assert all(not_cached(cells(map_, row, FILES[1], 128, 128)) for row in rows)
    # The middle half of 4-written.bin was written, the rest never read.
    assert any(fully_cached(cells(map_, row, FILES[3], 64, 128)) for row in rows)
    assert all(not_cached(cells(map_, row, FILES[3], 0, 64)) for row in rows)


def test_helpers_can_fail() -> None:
    assert not fully_cached([1.0, 0.5])
    assert not fully_cached([0.9, 0.9])
    assert not not_cached([0.0, 0.02])
