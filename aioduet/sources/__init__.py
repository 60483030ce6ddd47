"""Sources: kernel interfaces translated into observations for the store.

Each kernel interface is one module here; a source knows the scopes it watches, never the
tasks behind them.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from .._paths import PathIndex
from ..errors import SourceUnavailable
from ..store import Store
from ._base import Checker, Introduction, PathNote, Sink, Source
from .residency import ResidencySource

__all__ = [
    "AVAILABLE",
    "Checker",
    "Introduction",
    "PathNote",
    "ResidencySource",
    "Sink",
    "Source",
    "make_sources",
    "resolve_sources",
]

#: Source names this version can run.
AVAILABLE = ("residency",)
#: Source names of the design that this version does not provide yet.
_PLANNED = ("tracepoints", "inotify", "writeback", "fanotify")
_SETS = {"auto": ("residency",), "scan": ("residency",)}


def resolve_sources(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Turn ``open_duet(sources=...)`` into source names.

    Raises:
        ValueError: an unknown set or source name, or an empty list.
        SourceUnavailable: ``"exact"`` or a planned source this version cannot run yet.
    """
    if isinstance(spec, str):
        if spec in _SETS:
            return _SETS[spec]
        if spec == "exact":
            raise SourceUnavailable(
                errno.ENOTSUP,
                "the exact source set (kernel tracepoints) is not available in this version;"
                " use sources='scan'",
            )
        raise ValueError(f"unknown source set {spec!r}: use 'auto', 'scan', 'exact' or a list")
    names = tuple(spec)
    if not names:
        raise ValueError("sources is an empty list: name at least one source")
    for name in names:
        if name in _PLANNED:
            raise SourceUnavailable(
                errno.ENOTSUP, f"the {name!r} source is not available in this version"
            )
        if name not in AVAILABLE:
            raise ValueError(f"unknown source {name!r}; available: {', '.join(AVAILABLE)}")
    return tuple(dict.fromkeys(names))


def make_sources(
    names: Sequence[str], index: PathIndex, store: Store, interval: float
) -> list[Source]:
    """Build the named sources around one sink."""
    sink = Sink(store, index)
    sources: list[Source] = []
    for name in names:
        if name == "residency":
            sources.append(ResidencySource(sink, interval=interval))
    return sources
