"""Per-page residency maps as ``bytes`` of 0/1, and the diffs between them.

A map holds one byte per page (``b"\\x01"`` resident/dirty, ``b"\\x00"`` not), as mincore
returns it once normalised. Diffs use big-integer arithmetic over the whole map and a
regular expression to find runs, so no Python loop runs per page.
"""

from __future__ import annotations

import re

__all__ = ["diff", "from_runs", "or_", "runs"]

_ONES = re.compile(b"\x01+")


def runs(vector: bytes | bytearray) -> list[tuple[int, int]]:
    """``(first page, count)`` runs of set pages, ascending."""
    return [(m.start(), m.end() - m.start()) for m in _ONES.finditer(vector)]


def from_runs(page_runs: list[tuple[int, int]], pages: int) -> bytes:
    """The map of ``pages`` pages with the given runs set (runs past the end are clipped)."""
    vector = bytearray(pages)
    for first, count in page_runs:
        end = min(first + count, pages)
        if first < end:
            vector[first:end] = b"\x01" * (end - first)
    return bytes(vector)


def _as_int(vector: bytes | bytearray) -> int:
    return int.from_bytes(vector, "little")


def _as_bytes(value: int, pages: int) -> bytes:
    return value.to_bytes(pages, "little")


def diff(
    old: bytes | bytearray, new: bytes | bytearray
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Runs set in ``new`` but not ``old`` (added), and set in ``old`` but not ``new`` (removed).

    Maps of different lengths are compared as if the shorter one were padded with zeros.
    """
    if old == new:
        return [], []
    pages = max(len(old), len(new))
    a, b = _as_int(old), _as_int(new)
    return runs(_as_bytes(b & ~a, pages)), runs(_as_bytes(a & ~b, pages))


def or_(first: bytes | bytearray, second: bytes | bytearray) -> bytes:
    """Pages set in either map (as long as the longer one)."""
    pages = max(len(first), len(second))
    return _as_bytes(_as_int(first) | _as_int(second), pages)
