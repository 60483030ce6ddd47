"""Choosing a worker per task from the board: pure logic, no cluster."""

from __future__ import annotations

import pytest

from aioduet.dask import best_workers
from aioduet.dask._placement import check_key

BOARD = {
    "tcp://a": {"x": 4096 * 10, "y": 4096},
    "tcp://b": {"y": 4096 * 5, "z": 4096 * 2},
}


def test_each_task_goes_to_the_worker_caching_most_of_its_input() -> None:
    assert best_workers(BOARD, [["x"], ["y"], ["z"], ["x", "y"], ["y", "z"]]) == [
        "tcp://a",
        "tcp://b",
        "tcp://b",
        "tcp://a",  # 11 pages against 5
        "tcp://b",
    ]


def test_no_worker_caching_enough_means_no_choice() -> None:
    assert best_workers(BOARD, [["w"], ["x"]], min_bytes=4096 * 11) == [None, None]
    assert best_workers({}, [["x"]]) == [None]
    assert best_workers(BOARD, [["w", "v"]]) == [None]


def test_ties_are_spread_over_the_workers() -> None:
    board = {"tcp://a": {"s": 4096}, "tcp://b": {"s": 4096}, "tcp://c": {}}
    assert best_workers(board, [["s"]] * 4) == ["tcp://a", "tcp://b", "tcp://a", "tcp://b"]


def test_min_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_bytes"):
        best_workers(BOARD, [["x"]], min_bytes=0)


def test_input_paths_are_relative_and_inside_the_root() -> None:
    assert check_key("a/./b") == "a/b"
    for bad in ["/etc/passwd", "../x", "a/../../x", "", "."]:
        with pytest.raises(ValueError, match="relative"):
            check_key(bad)
    with pytest.raises(TypeError, match="str"):
        check_key(b"x")
