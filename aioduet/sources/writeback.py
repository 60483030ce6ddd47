"""The ``writeback`` source: system-wide writeback counters that wake the residency scanner.

Kernel interfaces: ``/proc/vmstat`` (``nr_dirty``, ``nr_writeback``, ``nr_dirtied``,
``nr_written``, and ``nr_writeback_temp`` on kernels that still have FUSE temporary pages)
and, only when vmstat cannot be read or parsed, ``/proc/meminfo`` (``Dirty``, ``Writeback``,
``WritebackTmp``). Both files stay open; each poll re-reads vmstat with one ``pread`` at
offset 0 and looks up only the keys it needs, on the event loop (procfs reads never wait for
I/O; a thread hop would cost more): on 6.18 with 2 CPUs about 40 us in the kernel and 20 us
of parsing, 60-150 us per poll with cold caches, well under 1 ms of CPU per second at the
default interval of 0.5 s (the kernel folds per-CPU counts into these counters only every
``vm.stat_interval``, 1 s, so polling much faster gains little). vmstat's kernel cost grows
with the number of CPUs (it sums per-CPU event counters).

When the counters show that pages left the dirty or writeback state since the last poll
(the rule is :meth:`Counters.progressed_since <aioduet.sources._procfs.Counters.progressed_since>`:
``nr_written`` grew, ``nr_writeback`` changed, or ``nr_dirtied`` grew by more than
``nr_dirty``), the source calls :meth:`Checker.check_dirty`, and the scanner rechecks the
files it knows to hold dirty or writeback pages, turning DIRTY into FLUSHED. Nothing moved,
nothing is woken.

What it cannot see: which files progressed (the counters are system-wide, so writeback of
files outside every scope wakes the scanner too; the recheck is cheap), and counts still
held in per-CPU deltas, which the kernel folds into the global counters every
``vm.stat_interval`` (1 s by default): a small writeback may be noticed up to that late.
It produces no observations of its own and does nothing while no scope is watched.
"""

from __future__ import annotations

import errno
import os

import anyio
import anyio.abc
import attrs

from .. import _kernel
from .._status import SourceStatus
from ..errors import SourceUnavailable
from ._base import Introduction, Sink
from ._counters import SourceCounters
from ._procfs import CounterFormatError, Counters, parse_meminfo, parse_vmstat
from ._scopes import Scopes

__all__ = ["WritebackSource"]

# O_NONBLOCK: a fake procfs holding a FIFO must not hang the event loop at open.
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
#: Counter files are a few KiB; anything past this is not one.
_MAX_SIZE = 1 << 20


@attrs.define(eq=False)
class _CounterFile:
    """One counter file, kept open and re-read from offset 0 (reopened after an error)."""

    path: str
    _fd: int | None = attrs.field(default=None, init=False)
    _size: int = attrs.field(default=8192, init=False)

    def open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, _OPEN_FLAGS)
        return self._fd

    def read(self) -> bytes:
        """The whole file, as it is now.

        Raises:
            OSError: it cannot be opened or read (the fd is closed, to reopen next time).
            CounterFormatError: it is larger than any counter file.
        """
        fd = self.open()
        try:
            while True:
                data = os.pread(fd, self._size, 0)
                if len(data) < self._size:
                    return data
                if self._size >= _MAX_SIZE:
                    raise CounterFormatError(f"larger than {_MAX_SIZE} bytes")
                self._size *= 2
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


@attrs.define(eq=False)
class WritebackSource:
    """Wakes the residency scanner when the system's writeback counters show progress.

    Args:
        sink: the sink whose :attr:`~Sink.checker` is told; with no checker attached, the
            source only counts.
        poll: seconds between two reads of the counters.
        procfs: where procfs is mounted (tests point it at a directory of fixture files).
    """

    sink: Sink
    poll: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    procfs: str = "/proc"
    _vmstat: _CounterFile = attrs.field(init=False)
    _meminfo: _CounterFile = attrs.field(init=False)
    _roots: Scopes = attrs.field(init=False, factory=Scopes)
    _scoped: anyio.Event = attrs.field(init=False, factory=anyio.Event)
    _last: Counters | None = attrs.field(init=False, default=None)
    _counts: SourceCounters = attrs.field(init=False, factory=SourceCounters)
    _polls: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._vmstat = _CounterFile(os.path.join(self.procfs, "vmstat"))
        self._meminfo = _CounterFile(os.path.join(self.procfs, "meminfo"))

    @property
    def name(self) -> str:
        return "writeback"

    @property
    def counters(self) -> Counters | None:
        """The counters of the last successful poll (None before one, or while idle)."""
        return self._last

    # -- scopes --------------------------------------------------------------------------

    def add_scope(self, root: str) -> None:
        self._roots.add(root)
        self._scoped.set()

    def remove_scope(self, root: str) -> None:
        self._roots.remove(root)

    # -- running -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Poll the counters every ``poll`` seconds while a scope is watched, until cancelled.

        Raises:
            SourceUnavailable: ``procfs`` is not a directory, or neither counter file in it
                can be opened (raised before ``task_status.started()``).
        """
        self._open()
        self._counts.active = True
        task_status.started()
        try:
            while True:
                if not self._roots:
                    # The counters moved meanwhile for nothing we watch: start afresh.
                    self._last = None
                    self._scoped = anyio.Event()
                    await self._scoped.wait()
                self.poll_once()
                await anyio.sleep(self.poll)
        finally:
            self._counts.active = False
            self._vmstat.close()
            self._meminfo.close()

    def _open(self) -> None:
        if not os.path.isdir(self.procfs):
            raise SourceUnavailable(
                errno.ENOENT,
                f"the writeback source reads procfs, but {self.procfs!r} is not a directory"
                " (is /proc mounted?)",
            )
        failures: list[str] = []
        for counter_file in (self._vmstat, self._meminfo):
            try:
                counter_file.open()
            except OSError as exc:
                failures.append(f"{counter_file.path}: {exc.strerror or exc}")
        if len(failures) == 2:
            raise SourceUnavailable(
                errno.ENOENT, "the writeback source can read no counters: " + "; ".join(failures)
            )
        if failures:
            self._fail(failures[0])

    def poll_once(self) -> bool:
        """Read the counters once; if writeback progressed since the last poll, tell the checker.

        Never raises for unreadable or malformed counter files: the error is counted in
        :meth:`status` and the next poll tries again.

        Returns:
            Whether progress was seen (the first poll only records a baseline).
        """
        self._polls += 1
        counters = self._read()
        if counters is None:
            return False
        last, self._last = self._last, counters
        if last is None:
            return False
        if counters.written is None:
            # meminfo stood in for vmstat: carry the cumulative counters over, so that the
            # next vmstat poll still sees what completed meanwhile.
            counters = attrs.evolve(counters, dirtied=last.dirtied, written=last.written)
            self._last = counters
        if not counters.progressed_since(last):
            return False
        self._counts.observations += 1
        checker = self.sink.checker
        if checker is not None:
            checker.check_dirty()
        return True

    def _read(self) -> Counters | None:
        try:
            return parse_vmstat(self._vmstat.read())
        except (OSError, CounterFormatError) as exc:
            self._fail(f"{self._vmstat.path}: {_describe(exc)}")
        try:
            return parse_meminfo(self._meminfo.read(), _kernel.PAGE_SIZE)
        except (OSError, CounterFormatError) as exc:
            self._fail(f"{self._meminfo.path}: {_describe(exc)}")
        return None

    def _fail(self, message: str) -> None:
        self._counts.errors += 1
        self._counts.last_error = message

    async def introduce(self, root: str, intro: Introduction) -> None:
        """Nothing to introduce: the counters are not about any file."""

    # -- status --------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        """``observations``: polls that woke the checker; ``passes``: polls; ``errors``:
        failed reads of a counter file."""
        return self._counts.status(self.name, passes=self._polls)


def _describe(exc: OSError | CounterFormatError) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
