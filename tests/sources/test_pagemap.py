from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aioduet.sources import _pagemap

maps = st.binary(max_size=300).map(lambda b: bytes(x & 1 for x in b))


def naive_runs(vector: bytes) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for index, byte in enumerate(vector):
        if byte:
            if out and out[-1][0] + out[-1][1] == index:
                out[-1] = (out[-1][0], out[-1][1] + 1)
            else:
                out.append((index, 1))
    return out


def pages(vector: bytes) -> set[int]:
    return {i for i, b in enumerate(vector) if b}


def test_runs_examples() -> None:
    assert _pagemap.runs(b"") == []
    assert _pagemap.runs(b"\x00\x01\x01\x00\x01") == [(1, 2), (4, 1)]


@given(maps)
def test_runs_matches_naive_loop(vector: bytes) -> None:
    assert _pagemap.runs(vector) == naive_runs(vector)
    assert _pagemap.from_runs(_pagemap.runs(vector), len(vector)) == vector


@given(maps, maps)
def test_diff_is_set_difference(old: bytes, new: bytes) -> None:
    added, removed = _pagemap.diff(old, new)
    assert {p for f, c in added for p in range(f, f + c)} == pages(new) - pages(old)
    assert {p for f, c in removed for p in range(f, f + c)} == pages(old) - pages(new)


@given(maps, maps)
def test_or_is_union(first: bytes, second: bytes) -> None:
    union = _pagemap.or_(first, second)
    assert pages(union) == pages(first) | pages(second)
    assert len(union) == max(len(first), len(second))


def test_from_runs_clips_past_the_end() -> None:
    assert _pagemap.from_runs([(2, 10)], 4) == b"\x00\x00\x01\x01"
