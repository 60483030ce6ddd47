"""Which worker should run each task: the one with most of the task's input in its cache.

Pure logic over the scheduler's board (worker address -> cached bytes per file); the
scheduler plugin calls it, and so do the unit tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

__all__ = ["best_workers", "check_key"]


def check_key(key: object) -> str:
    """A task input must name a file relative to the workers' data root.

    Raises:
        TypeError: ``key`` is not a str.
        ValueError: ``key`` is absolute, empty, or leaves the root (``..``).
    """
    if not isinstance(key, str):
        raise TypeError(f"an input path must be a str, not {type(key).__name__}")
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or path == PurePosixPath("."):
        raise ValueError(
            f"an input path must be relative to the workers' data root, inside it: {key!r}"
        )
    return str(path)


def best_workers(
    board: Mapping[str, Mapping[str, int]],
    inputs: Sequence[Sequence[str]],
    *,
    min_bytes: int = 1,
) -> list[str | None]:
    """For each task (its input files), the worker caching most of them, or None.

    A worker qualifies for a task when it caches at least ``min_bytes`` of the task's input.
    Among the workers caching the most, the one given fewest tasks so far in this call wins
    (then the lowest address), which spreads tasks whose inputs are cached alike. None means
    no worker qualifies: the caller leaves the placement to the scheduler.

    Args:
        board: cached bytes per file (path relative to the data root) per worker address.
        inputs: per task, the files it reads.
        min_bytes: the least cached input that makes a worker preferred (at least 1).

    Raises:
        ValueError: ``min_bytes`` is below 1.
    """
    if min_bytes < 1:
        raise ValueError(f"min_bytes must be at least 1, not {min_bytes}")
    given: Counter[str] = Counter()
    chosen: list[str | None] = []
    for files in inputs:
        scores: Counter[str] = Counter()
        for worker, cached in board.items():
            held = sum(cached.get(path, 0) for path in files)
            if held >= min_bytes:
                scores[worker] = held
        if not scores:
            chosen.append(None)
            continue
        most = max(scores.values())
        best = min((w for w, held in scores.items() if held == most), key=lambda w: (given[w], w))
        given[best] += 1
        chosen.append(best)
    return chosen
