"""Heatmaps of synthetic recordings: cells, rows, columns that cut regions, and text."""

from __future__ import annotations

from pathlib import Path

import pytest
from recordings import HEADER, RUN, recording

from aioduet.views import Frame, Recording, heatmap, heatmap_text


def test_one_column_per_page_gives_each_page() -> None:
    cells = heatmap(RUN, columns=12)
    assert [f.path for f in cells.files] == ["a.bin", "b.bin"]
    assert cells.values[0] == (1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert cells.values[1] == (1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
    # b.bin's last region holds one cached page of two: spread evenly over them.
    assert cells.values[2] == pytest.approx((0,) * 10 + (0.5, 0.5))
    assert cells.ends == (1.0, 2.0, 3.0)
    assert cells.column("b.bin", 0) == 4
    assert cells.row(2.5) == 2


def test_wide_columns_average_their_pages() -> None:
    cells = heatmap(RUN, columns=3)  # 4 pages per column: a.bin, b.bin's halves
    assert cells.values[0] == pytest.approx((0.5, 0.0, 0.0))
    assert cells.values[1] == pytest.approx((0.5, 1.0, 1.0))
    assert cells.values[2] == pytest.approx((0.0, 0.0, 0.25))


def test_columns_that_cut_regions_share_them_by_overlap() -> None:
    cells = heatmap(RUN, columns=5)  # 2.4 pages per column
    # [0, 2.4): pages 0-1 cached, 0.4 of page 2 not; [2.4, 4.8): 0.8 of b.bin's page 0.
    assert cells.values[1] == pytest.approx((2 / 2.4, 0.8 / 2.4, 1.0, 1.0, 1.0))


def test_rows_average_their_frames() -> None:
    cells = heatmap(RUN, rows=1, columns=3)
    assert cells.values[0] == pytest.approx(((0.5 + 0.5) / 3, 1 / 3, (1 + 0.25) / 3))
    assert cells.ends == (3.0,)


def test_text_shades_from_nothing_to_all() -> None:
    text = heatmap_text(heatmap(RUN, columns=12))
    rows = [line for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [row.split("|")[1] for row in rows] == ["@@          ", "@@  @@@@@@@@", "          ++"]
    assert "columns 0-3: a.bin" in text
    assert "columns 4-11: b.bin" in text


def test_a_recording_without_frames_or_pages_has_no_heatmap() -> None:
    with pytest.raises(ValueError, match="no frames"):
        heatmap(recording())
    empty = Recording(HEADER, {}, (Frame(0, 1.0, ()),), None, 1.0)
    with pytest.raises(ValueError, match="no pages"):
        heatmap(empty)
    with pytest.raises(ValueError, match="at least 1"):
        heatmap(RUN, columns=0)


def test_nothing_is_read_from_disk(tmp_path: Path) -> None:
    # The views work on Recording values: a notebook can build or filter them in memory.
    assert heatmap(RUN).pages == 12
    assert not list(tmp_path.iterdir())
