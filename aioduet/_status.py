"""Snapshot values that ``status()`` and ``statistics()`` return."""

from __future__ import annotations

import attrs

from ._model import Event
from .store import StoreStatistics

__all__ = ["SourceStatus", "Status", "TaskStatistics", "TaskStatus"]


@attrs.frozen
class SourceStatus:
    """What one source has done so far."""

    name: str
    """The source's name (``"residency"``, ...)."""
    active: bool
    """Whether it is running now."""
    observations: int
    """What the source saw: observations handed to the store (residency), events read
    (inotify), counter changes that woke a recheck (writeback)."""
    lost: int = 0
    """Observations known lost (each also signalled to tasks as OVERFLOW)."""
    overflows: int = 0
    """Times an OVERFLOW was signalled."""
    errors: int = 0
    """Errors met and survived (a file that vanished mid-scan is not an error)."""
    unknown: int = 0
    """Files whose residency the kernel would not report (reported as unknown, never cached)."""
    passes: int = 0
    """Complete passes over the watched scopes."""
    budget: int | None = None
    """Kernel calls the source may make per interval for its periodic work (None: no budget)."""
    budget_used: float = 0.0
    """The fraction of the budget spent in the last interval."""
    cycle_seconds: float | None = None
    """How long the last complete pass took: the bound on finding a change nothing hinted."""
    last_error: str | None = None
    """The most recent error, as one line."""


@attrs.frozen
class TaskStatistics:
    """A task's counters, from :meth:`aioduet.Task.statistics`."""

    pending_files: int
    """Files holding pages not yet fetched."""
    pending_pages: int
    """Pages not yet fetched (before coalescing into items)."""
    buffered_items: int
    """Items already coalesced and waiting in the task's buffer."""
    items_delivered: int
    """Items returned by fetches and iteration so far."""
    scanning: bool
    """Whether the registration scan of the task's directory is still running."""


@attrs.frozen
class TaskStatus:
    """One registered task, as ``status()`` lists it."""

    id: int
    """Unique id of the task in this framework (never reused)."""
    name: str
    """The name given at registration."""
    mask: Event
    """The registered event mask."""
    path: str
    """The registered directory (absolute, symlinks resolved)."""
    statistics: TaskStatistics
    """The task's counters."""


@attrs.frozen
class Status:
    """A snapshot of the framework, from ``await duet.status()``."""

    running: bool
    """Whether the framework is open."""
    max_tasks: int
    """The most tasks that can be registered at once."""
    tasks: tuple[TaskStatus, ...]
    """Registered tasks, by id."""
    sources: tuple[SourceStatus, ...]
    """The sources in use."""
    store: StoreStatistics
    """Size and estimated memory of the event store."""
