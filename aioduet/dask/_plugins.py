"""The Dask side: a worker plugin that reports residency, a scheduler plugin that keeps it.

What runs where:

* each worker: :class:`ResidencyReporter` starts a :class:`ResidencyMonitor` over the
  worker's data root and, every ``interval`` seconds when something changed, sends its
  bounded :class:`ResidencySummary` to the scheduler (one RPC, ``aioduet_residency``);
* the scheduler: :class:`ResidencyBoard` keeps the latest summary of each worker, forgets a
  worker when it leaves or its reporter stops (``aioduet_forget``), and answers placement
  questions (``aioduet_place``) and requests for the whole board (``aioduet_board``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from ._monitor import ResidencyMonitor
from ._placement import best_workers
from ._summary import ResidencySummary

__all__ = ["BOARD_NAME", "REPORTER_NAME", "ResidencyBoard", "ResidencyReporter"]

log = logging.getLogger(__name__)

BOARD_NAME = "aioduet-residency-board"
REPORTER_NAME = "aioduet-residency"

DEFAULT_MAX_BYTES = 64 * 1024
"""The default budget of a summary's entries: about 1,000 files with 50-byte paths."""


class ResidencyReporter(WorkerPlugin):
    """Runs on each worker: watches its data root and reports what is cached to the scheduler.

    Args:
        root: the worker's data directory. ``{name}`` in it is replaced by the worker's name,
            so that one plugin serves workers with a directory each (one machine, several
            workers); on a real cluster every node usually has the same path.
        sources: the embedded framework's sources (as :func:`aioduet.open_duet`).
        daemon: the socket of an aioduet daemon on the node to register with instead of
            running a framework in the worker (several workers per node then share it).
        interval: seconds between two reports (a report is sent only when something
            changed).
        max_bytes: the budget of a summary's entries (see :class:`ResidencySummary`).

    Raises:
        ValueError: ``interval`` is not positive or ``max_bytes`` is below 1 KiB.
    """

    name = REPORTER_NAME
    idempotent = False

    def __init__(
        self,
        root: str | Path,
        *,
        sources: str | Sequence[str] = "auto",
        daemon: str | None = None,
        interval: float = 0.5,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        if max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, not {max_bytes}")
        self.root_template = str(root)
        self.sources, self.daemon = sources, daemon
        self.interval, self.max_bytes = interval, max_bytes
        self.root: Path | None = None
        self.monitor: ResidencyMonitor | None = None
        self.reports = 0
        self._sender: asyncio.Task[None] | None = None

    async def setup(self, worker: Any) -> None:
        """Start the monitor (in its own thread) and the periodic report."""
        self.root = Path(self.root_template.replace("{name}", str(worker.name)))
        monitor = ResidencyMonitor(self.root, self.sources, self.daemon)
        # Starting registers the task (and may start tracefs): not on the worker's loop.
        await asyncio.to_thread(monitor.start)
        self.monitor = monitor
        self._sender = asyncio.create_task(self._report(worker, monitor))

    async def teardown(self, worker: Any) -> None:
        """Stop reporting, take this worker off the board, and stop the monitor."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        # A worker that stays, without a reporter, must not keep its last summary on the
        # board (where it would draw tasks for good). A worker that leaves is dropped anyway.
        with contextlib.suppress(Exception):
            await worker.scheduler.aioduet_forget(worker=worker.address)
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.stop)

    async def _report(self, worker: Any, monitor: ResidencyMonitor) -> None:
        sent = -1
        while True:
            version = monitor.version
            if version != sent:
                summary = monitor.summary(self.max_bytes)
                try:
                    taken = await worker.scheduler.aioduet_residency(
                        worker=worker.address, summary=summary.to_wire()
                    )
                except Exception as exc:  # a lost report is sent again
                    log.warning("could not send the residency summary: %s", exc)
                else:
                    if taken:
                        sent = version
                        self.reports += 1
                    elif not self.reports:  # Dask answers None to an unknown operation
                        log.warning("the scheduler has no aioduet residency board yet")
            await asyncio.sleep(self.interval)


class ResidencyBoard(SchedulerPlugin):
    """Runs on the scheduler: the latest residency summary of each worker.

    A worker's summary is replaced by each report and dropped when the worker leaves, so a
    dead worker is never chosen; reports from workers the scheduler does not know are
    ignored.
    """

    name = BOARD_NAME

    def __init__(self) -> None:
        self.summaries: dict[str, ResidencySummary] = {}
        """Per worker address."""
        self.scheduler: Any = None

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        scheduler.handlers["aioduet_residency"] = self.receive
        scheduler.handlers["aioduet_place"] = self.place
        scheduler.handlers["aioduet_board"] = self.board
        scheduler.handlers["aioduet_forget"] = self.forget

    def remove_worker(self, scheduler: Any, worker: str, **kwargs: Any) -> None:
        self.summaries.pop(worker, None)

    def receive(self, worker: str, summary: dict[str, Any]) -> bool:
        """A worker's report (the RPC ``aioduet_residency``); True when taken (or moot)."""
        if self.scheduler is not None and worker not in self.scheduler.workers:
            return True  # it left while the report was under way
        try:
            self.summaries[worker] = ResidencySummary.from_wire(summary)
        except ValueError as exc:
            log.warning("ignored a malformed residency summary from %s: %s", worker, exc)
        return True

    def forget(self, worker: str) -> bool:
        """Drop a worker's summary (the RPC ``aioduet_forget``: its reporter stopped)."""
        self.summaries.pop(worker, None)
        return True

    def place(self, inputs: list[list[str]], min_bytes: int = 1) -> list[str | None]:
        """The best worker per task (the RPC ``aioduet_place``; see :func:`best_workers`)."""
        board = {worker: summary.files for worker, summary in self.summaries.items()}
        return best_workers(board, inputs, min_bytes=min_bytes)

    def board(self) -> dict[str, dict[str, Any]]:
        """Every worker's summary, in wire form (the RPC ``aioduet_board``)."""
        return {worker: summary.to_wire() for worker, summary in self.summaries.items()}
