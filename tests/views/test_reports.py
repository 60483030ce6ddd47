"""Reports of a synthetic recording: the working-set size and the per-file sums."""

from __future__ import annotations

import pytest
from recordings import RUN

from aioduet.views import Activity, file_reports, working_set


def test_wss_sums_the_files_at_each_frame() -> None:
    wss = working_set(RUN)
    assert wss.times == (1.0, 2.0, 3.0)
    assert wss.cached == (2 * 4096, 10 * 4096, 1 * 4096)
    assert wss.percentile(0) == 4096
    assert wss.percentile(50) == 2 * 4096
    assert wss.percentile(100) == 10 * 4096
    assert wss.as_json()["percentiles"] == {
        "0": 4096,
        "10": 4096,
        "25": 4096,
        "50": 8192,
        "75": 40960,
        "90": 40960,
        "100": 40960,
    }
    with pytest.raises(ValueError, match="between 0 and 100"):
        wss.percentile(101)


def test_files_sum_each_file_up() -> None:
    a, b = file_reports(RUN)
    assert (a.path, a.pages, a.cached, a.peak, a.dirty) == ("a.bin", 4, 0, 2, 0)
    assert a.mean == pytest.approx((2 + 2 + 0) / 3)
    assert a.activity == Activity(added=2, removed=2)
    assert (b.path, b.cached, b.peak, b.dirty) == ("b.bin", 1, 8, 1)
    assert b.mean == pytest.approx((0 + 8 + 1) / 3)
    assert b.as_json(4096)["cached_bytes"] == 4096
