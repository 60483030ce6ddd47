"""Sources: kernel interfaces translated into observations for the store.

Each kernel interface is one module here; a source knows the scopes it watches, never the
tasks behind them.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence

import attrs

from .._paths import Exclusions
from ..errors import SourceUnavailable
from ._base import Checker, Introduction, PathNote, Sink, Source
from .fanotify import FanotifySource
from .inotify import InotifySource
from .residency import DEFAULT_BUDGET, MIN_BUDGET, ResidencySource
from .tracepoints import TracepointSource, unavailable_reason
from .writeback import WritebackSource

__all__ = [
    "AVAILABLE",
    "DEFAULT_BUDGET",
    "MIN_BUDGET",
    "Checker",
    "FanotifySource",
    "InotifySource",
    "Introduction",
    "PathNote",
    "ResidencySource",
    "Sink",
    "Source",
    "SourceOptions",
    "TracepointSource",
    "WritebackSource",
    "auto_sources",
    "make_sources",
    "resolve_sources",
]

logger = logging.getLogger("aioduet")

#: Source names this version can run.
AVAILABLE = ("fanotify", "inotify", "residency", "tracepoints", "writeback")
#: The exact set (root): tracepoints report every page; inotify keeps paths current; the
#: residency source only scans for registrations and after lost events, mirroring the rest.
_EXACT = ("inotify", "tracepoints", "residency")
#: The unprivileged set, in the order registration scans run: watches first, so that no
#: change between the residency scan of a file and the watch on its directory is missed.
_UNPRIVILEGED = ("inotify", "residency", "writeback")
_SETS = {"scan": _UNPRIVILEGED}
#: Sources that only tell the residency scanner what to check.
_HINTERS = ("fanotify", "inotify", "writeback")


def auto_sources(exact_reason: str | None) -> tuple[str, ...]:
    """The set ``"auto"`` stands for: the exact set when nothing stands against it."""
    return _UNPRIVILEGED if exact_reason else _EXACT


def resolve_sources(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Turn ``open_duet(sources=...)`` into source names: a set's name, a list of source
    names, or those names in one comma-separated string (``"inotify,residency"``).

    ``"auto"`` is the exact set where it can run (root, tracefs, the page-cache events; as
    root this mounts tracefs when it is absent), else the unprivileged set; the reason for
    falling back is logged (logger ``aioduet``, level INFO).

    Raises:
        ValueError: an unknown set or source name, or an empty list.
        SourceUnavailable: ``"exact"`` where it cannot run (the message says why).
    """
    if isinstance(spec, str):
        if spec == "auto":
            reason = unavailable_reason()
            if reason:
                logger.info(
                    "sources='auto': the unprivileged set %s, not the exact one: %s",
                    "+".join(_UNPRIVILEGED),
                    reason,
                )
            return auto_sources(reason)
        if spec in _SETS:
            return _SETS[spec]
        if spec == "exact":
            reason = unavailable_reason()
            if reason:
                code = errno.EPERM if os.geteuid() != 0 else errno.ENOTSUP
                raise SourceUnavailable(
                    code, f"the exact source set cannot run here: {reason}; use sources='scan'"
                )
            return _EXACT
        if "," not in spec and spec not in AVAILABLE:
            raise ValueError(f"unknown source set {spec!r}: use 'auto', 'scan', 'exact' or a list")
        spec = [
            name.strip() for name in spec.split(",")
        ]  # source names, as a command line has them
    names = tuple(spec)
    if not names:
        raise ValueError("sources is an empty list: name at least one source")
    for name in names:
        if name not in AVAILABLE:
            raise ValueError(f"unknown source {name!r}; available: {', '.join(AVAILABLE)}")
    names = tuple(dict.fromkeys(names))
    hinters = [name for name in names if name in (*_HINTERS, "tracepoints")]
    if hinters and "residency" not in names:
        raise ValueError(
            f"the {hinters[0]!r} source only tells the 'residency' source what to check:"
            " add 'residency' to the list"
        )
    return tuple(sorted(names, key=_ORDER.index))


_ORDER = ("fanotify", "inotify", "tracepoints", "residency", "writeback")


@attrs.frozen
class SourceOptions:
    """Settings of the sources that ``open_duet()`` passes on."""

    interval: float = 1.0
    """Seconds between two rounds of the periodic residency scan."""
    budget: int = DEFAULT_BUDGET
    """Kernel calls per interval for the periodic residency scan."""
    exclude: Exclusions = attrs.field(factory=Exclusions)
    """Paths no source watches."""
    trace_buffer_kb: int = 4096
    """Ring-buffer size per CPU of the tracepoint source's tracefs instance."""


def make_sources(names: Sequence[str], sink: Sink, options: SourceOptions) -> list[Source]:
    """Build the named sources around one sink, in the order their scans must run."""
    sources: list[Source] = []
    for name in names:
        if name == "inotify":
            # Beside the tracepoints, inotify only keeps paths current: a read or a write
            # must not cost an event each (bench/fio_overhead.py).
            hints = "tracepoints" not in names
            sources.append(InotifySource(sink, exclude=options.exclude.patterns, hints=hints))
        elif name == "fanotify":
            hints = "tracepoints" not in names
            sources.append(FanotifySource(sink, exclude=options.exclude.patterns, hints=hints))
        elif name == "writeback":
            sources.append(WritebackSource(sink))
        elif name == "tracepoints":
            sources.append(
                TracepointSource(sink, buffer_kb=options.trace_buffer_kb, resolve=sink.resolve)
            )
        elif name == "residency":
            sources.append(
                ResidencySource(
                    sink,
                    periodic="tracepoints" not in names,
                    interval=options.interval,
                    budget=options.budget,
                    exclude=options.exclude,
                )
            )
    return sources
