"""The residency summary: what it keeps, its bound on the wire, and its wire form."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioduet.dask import ResidencySummary
from aioduet.dask._summary import ENVELOPE, entry_cost


def packed(summary: ResidencySummary) -> int:
    return len(msgpack.packb(summary.to_wire(), use_bin_type=True))


def test_keeps_the_most_cached_files_that_fit_and_counts_the_rest() -> None:
    pages = {"a": 10, "b": 30, "c": 20, "d": 0, "e": 5}
    budget = entry_cost("b") + entry_cost("c")
    summary = ResidencySummary.from_pages(pages, max_bytes=budget)
    assert list(summary.files) == ["b", "c"]
    assert summary.files == {"b": 30 * 4096, "c": 20 * 4096}
    assert summary.cached_bytes == 65 * 4096
    assert summary.omitted_files == 2  # a and e; d has nothing cached


def test_ties_are_broken_by_path() -> None:
    summary = ResidencySummary.from_pages({"z": 1, "a": 1, "m": 1}, max_bytes=entry_cost("a"))
    assert summary.files == {"a": 4096}


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=300),
        st.integers(min_value=0, max_value=2**40),
        max_size=400,
    ),
    st.integers(min_value=0, max_value=20_000),
)
def test_the_packed_summary_never_exceeds_its_bound(pages: dict[str, int], budget: int) -> None:
    summary = ResidencySummary.from_pages(pages, max_bytes=budget)
    assert packed(summary) <= budget + ENVELOPE
    cached = {path for path, count in pages.items() if count}
    assert set(summary.files) <= cached
    assert len(summary.files) + summary.omitted_files == len(cached)
    if summary.files and summary.omitted_files:  # what was left out is never more cached
        assert min(summary.files.values()) >= max(
            count * 4096 for path, count in pages.items() if count and path not in summary.files
        )


def test_ten_thousand_files_fit_in_the_default_budget_as_their_most_cached() -> None:
    pages = {f"dataset/part-{n:05d}.parquet": n for n in range(10_000)}
    summary = ResidencySummary.from_pages(pages, max_bytes=64 * 1024)
    assert packed(summary) <= 64 * 1024 + ENVELOPE
    assert 1000 < len(summary.files) < 2000
    assert "dataset/part-09999.parquet" in summary.files
    assert summary.omitted_files == 9_999 - len(summary.files)


def test_wire_round_trip() -> None:
    summary = ResidencySummary.from_pages({"x/y": 3, "z": 1}, max_bytes=1000)
    wire = msgpack.unpackb(msgpack.packb(summary.to_wire()))
    assert ResidencySummary.from_wire(wire) == summary


@pytest.mark.parametrize(
    "wire",
    [
        {},
        {"files": {}, "cached_bytes": 0},
        {"files": [], "cached_bytes": 0, "omitted_files": 0},
        {"files": {"a": -1}, "cached_bytes": 0, "omitted_files": 0},
        {"files": {"a": 1.5}, "cached_bytes": 0, "omitted_files": 0},
        {"files": {1: 1}, "cached_bytes": 0, "omitted_files": 0},
        {"files": {}, "cached_bytes": -1, "omitted_files": 0},
        {"files": {}, "cached_bytes": 0, "omitted_files": True},
        None,
    ],
)
def test_a_malformed_wire_summary_is_a_value_error(wire: object) -> None:
    with pytest.raises(ValueError, match="residency summary"):
        ResidencySummary.from_wire(wire)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        ResidencySummary.from_pages({}, max_bytes=-1)
    with pytest.raises(ValueError, match="negative"):
        ResidencySummary.from_pages({"a": -2}, max_bytes=100)
