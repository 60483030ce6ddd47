"""Sources: kernel interfaces translated into observations for the store.

Each kernel interface is one module here; a source knows the scopes it watches, never the
tasks behind them.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

import attrs

from .._paths import Exclusions
from ..errors import SourceUnavailable
from ._base import Checker, Introduction, PathNote, Sink, Source
from .residency import DEFAULT_BUDGET, MIN_BUDGET, ResidencySource

__all__ = [
    "AVAILABLE",
    "DEFAULT_BUDGET",
    "MIN_BUDGET",
    "Checker",
    "Introduction",
    "PathNote",
    "ResidencySource",
    "Sink",
    "Source",
    "SourceOptions",
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


@attrs.frozen
class SourceOptions:
    """Settings of the sources that ``open_duet()`` passes on."""

    interval: float = 1.0
    """Seconds between two rounds of the periodic residency scan."""
    budget: int = DEFAULT_BUDGET
    """Kernel calls per interval for the periodic residency scan."""
    exclude: Exclusions = attrs.field(factory=Exclusions)
    """Paths no source watches."""


def make_sources(names: Sequence[str], sink: Sink, options: SourceOptions) -> list[Source]:
    """Build the named sources around one sink, in the order their scans must run."""
    sources: list[Source] = []
    for name in names:
        if name == "residency":
            sources.append(
                ResidencySource(
                    sink,
                    interval=options.interval,
                    budget=options.budget,
                    exclude=options.exclude,
                )
            )
    return sources
