"""What every source counts for ``status()``."""

from __future__ import annotations

import attrs

from .._status import SourceStatus

__all__ = ["SourceCounters"]


@attrs.define(eq=False)
class SourceCounters:
    """A source's running counters; :meth:`status` turns them into a :class:`SourceStatus`."""

    active: bool = False
    observations: int = 0
    lost: int = 0
    overflows: int = 0
    errors: int = 0
    last_error: str | None = None

    def error(self, message: str) -> None:
        """Count an error survived, and remember it as the last one."""
        self.errors += 1
        self.last_error = message

    def status(
        self,
        name: str,
        *,
        unknown: int = 0,
        passes: int = 0,
        budget: int | None = None,
        budget_used: float = 0.0,
        cycle_seconds: float | None = None,
    ) -> SourceStatus:
        """A snapshot, with the figures only some sources have."""
        return SourceStatus(
            name=name,
            active=self.active,
            observations=self.observations,
            lost=self.lost,
            overflows=self.overflows,
            errors=self.errors,
            unknown=unknown,
            passes=passes,
            last_error=self.last_error,
            budget=budget,
            budget_used=budget_used,
            cycle_seconds=cycle_seconds,
        )
