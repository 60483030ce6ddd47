"""The residency summary a worker sends to the scheduler: cached bytes per file, bounded.

A worker's framework knows every cached page of its data directory; the scheduler needs much
less to place a task: how many bytes of each input file a worker holds in its page cache.
The summary keeps the files with the most cached bytes whose entries fit in a byte budget,
and says how much it left out, so that its size on the wire has a bound whatever the data.

The wire form is a plain dict (msgpack, which Dask's RPC uses, sends it as is)::

    {"files": {"<path relative to the data root>": <cached bytes>, ...},
     "cached_bytes": <over all files, the ones left out included>,
     "omitted_files": <files with cached bytes left out>}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ENTRY_OVERHEAD", "ENVELOPE", "ResidencySummary", "entry_cost"]

ENTRY_OVERHEAD = 12
"""Bytes an entry costs on top of its path, at most: a msgpack str header (3 bytes for any
path up to 64 KiB; PATH_MAX is 4 KiB) and a uint64 (9 bytes)."""

ENVELOPE = 96
"""Bytes of the wire dict besides its entries, at most: three keys, the map headers and two
uint64 counts."""


def entry_cost(path: str) -> int:
    """The most bytes one file's entry takes in the packed summary."""
    return len(path.encode("utf-8", "surrogateescape")) + ENTRY_OVERHEAD


@attrs.frozen
class ResidencySummary:
    """What one worker has cached under its data root, as the scheduler sees it."""

    files: Mapping[str, int] = attrs.field(factory=dict)
    """Cached bytes per file (path relative to the data root), the most cached first."""
    cached_bytes: int = 0
    """Cached bytes over every file under the root, the files left out included."""
    omitted_files: int = 0
    """Files with cached pages that did not fit in the budget (the least cached ones)."""

    @classmethod
    def from_pages(
        cls, pages: Mapping[str, int], *, max_bytes: int, page_size: int = 4096
    ) -> ResidencySummary:
        """Build a summary from cached pages per file, keeping what fits in ``max_bytes``.

        Files are kept from the most cached down (ties by path), while the sum of their
        :func:`entry_cost` stays within ``max_bytes``; files with no cached pages are left
        out and not counted. The packed summary is then at most ``max_bytes + ENVELOPE``
        bytes.

        Raises:
            ValueError: ``max_bytes`` is negative, or a page count is negative.
        """
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, not {max_bytes}")
        cached = [(count, path) for path, count in pages.items() if count]
        if any(count < 0 for count, _ in cached):
            raise ValueError("cached page counts must not be negative")
        cached.sort(key=lambda entry: (-entry[0], entry[1]))
        kept: dict[str, int] = {}
        room = max_bytes
        for count, path in cached:
            cost = entry_cost(path)
            if cost > room:
                break
            room -= cost
            kept[path] = count * page_size
        total = sum(count for count, _ in cached) * page_size
        return cls(kept, total, len(cached) - len(kept))

    def to_wire(self) -> dict[str, Any]:
        """The plain dict sent to the scheduler."""
        return {
            "files": dict(self.files),
            "cached_bytes": self.cached_bytes,
            "omitted_files": self.omitted_files,
        }

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ResidencySummary:
        """Read the dict :meth:`to_wire` made.

        Raises:
            ValueError: the dict is not a summary (missing keys, wrong types).
        """
        try:
            files, total, omitted = wire["files"], wire["cached_bytes"], wire["omitted_files"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a residency summary: {wire!r:.200}") from exc
        if not isinstance(files, Mapping) or not all(
            isinstance(path, str) and type(size) is int and size >= 0
            for path, size in files.items()
        ):
            raise ValueError("a residency summary's files must map str paths to byte counts")
        if type(total) is not int or type(omitted) is not int or total < 0 or omitted < 0:
            raise ValueError("a residency summary's totals must be non-negative ints")
        return cls(dict(files), total, omitted)
