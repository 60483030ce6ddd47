"""Parsers for the page-cache counters of ``/proc/vmstat`` and ``/proc/meminfo``.

Only the few keys the writeback source needs are looked up (``bytes.find`` on the raw file,
no full parse). Both layouts are accepted:

- ``/proc/vmstat``: ``nr_dirty``, ``nr_writeback`` and ``nr_written`` are required;
  ``nr_dirtied`` (every kernel since 2.6.37) and ``nr_writeback_temp`` (FUSE temporary pages;
  gone from the file by Linux 6.18, where FUSE writeback counts in ``nr_writeback``) are
  optional.
- ``/proc/meminfo``: ``Dirty`` and ``Writeback`` (kB) are required; ``WritebackTmp`` is
  optional (still printed, as 0, on 6.18).

Anything else malformed (a key missing, a value that is not a decimal number, a line cut
short) raises :class:`CounterFormatError` and nothing else, whatever the bytes.
"""

from __future__ import annotations

import attrs

__all__ = ["CounterFormatError", "Counters", "parse_meminfo", "parse_vmstat"]

#: A u64 has at most 20 decimal digits; longer values are garbage (and int() would refuse
#: strings beyond its digit limit with a ValueError of its own).
_MAX_DIGITS = 20


class CounterFormatError(ValueError):
    """A counter file is malformed: a required key is missing or its value is not a number."""


@attrs.frozen
class Counters:
    """The system-wide page-cache writeback counters at one moment, in pages."""

    dirty: int
    """Pages dirty now (``NR_FILE_DIRTY``: vmstat ``nr_dirty``, meminfo ``Dirty``)."""
    writeback: int
    """Pages under writeback now, FUSE temporary pages included where the kernel has them."""
    dirtied: int | None = None
    """Pages ever dirtied (vmstat ``nr_dirtied``); None when the file does not say."""
    written: int | None = None
    """Pages whose writeback ever ended (vmstat ``nr_written``); None when unknown."""

    def progressed_since(self, old: Counters) -> bool:
        """Whether pages left the dirty or writeback state between ``old`` and these counters.

        True when any of these holds:

        - ``written`` grew: writeback of some pages ended. The counter is cumulative, so no
          completion between two polls is missed, whatever else happened meanwhile.
        - ``writeback`` changed: writeback started (pages left the dirty state) or ended.
        - pages left the dirty state: ``dirtied`` grew by more than ``dirty`` did (writeback
          started, or dirty pages were truncated or deleted, which ``written`` never counts).
          Unlike a fall of the ``dirty`` gauge, this is not hidden by concurrent dirtying.
          Without ``dirtied`` (meminfo), a fall of ``dirty`` is used.

        Pages being dirtied (``dirty`` or ``dirtied`` growing alone) is no progress.
        """
        if old.written is not None and self.written is not None and self.written > old.written:
            return True
        if self.writeback != old.writeback:
            return True
        if old.dirtied is not None and self.dirtied is not None:
            return self.dirtied - old.dirtied > self.dirty - old.dirty
        return self.dirty < old.dirty


def _field(data: bytes, key: bytes) -> bytes | None:
    """The rest of the line that starts with ``key`` (separator included), or None."""
    if data.startswith(key):
        start = len(key)
    else:
        at = data.find(b"\n" + key)
        if at < 0:
            return None
        start = at + 1 + len(key)
    end = data.find(b"\n", start)
    if end < 0:  # the kernel ends every line: this one was cut short
        raise CounterFormatError(f"{key.decode().strip()} line is truncated")
    return data[start:end]


def _number(key: bytes, text: bytes) -> int:
    if not text.isdigit() or len(text) > _MAX_DIGITS:  # ASCII digits only, no sign, no "_"
        value = text[:40].decode("ascii", "backslashreplace")
        raise CounterFormatError(f"{key.decode().strip()} is not a number: {value!r}")
    return int(text)


def _optional(data: bytes, key: bytes) -> int | None:
    text = _field(data, key)
    return None if text is None else _number(key, text.strip())


def _required(data: bytes, key: bytes) -> int:
    value = _optional(data, key)
    if value is None:
        raise CounterFormatError(f"{key.decode().strip()} is missing")
    return value


def parse_vmstat(data: bytes) -> Counters:
    """Counters from the text of ``/proc/vmstat`` (``name value`` lines, values in pages).

    Raises:
        CounterFormatError: a required key is missing or a needed value is malformed.
    """
    dirty = _required(data, b"nr_dirty ")
    writeback = _required(data, b"nr_writeback ") + (_optional(data, b"nr_writeback_temp ") or 0)
    written = _required(data, b"nr_written ")
    dirtied = _optional(data, b"nr_dirtied ")
    return Counters(dirty=dirty, writeback=writeback, dirtied=dirtied, written=written)


def _meminfo_pages(data: bytes, key: bytes, page_size: int, required: bool) -> int:
    text = _field(data, key)
    if text is None:
        if required:
            raise CounterFormatError(f"{key.decode()} is missing")
        return 0
    parts = text.split()
    if len(parts) != 2 or parts[1] != b"kB":
        value = text[:40].decode("ascii", "backslashreplace")
        raise CounterFormatError(f"{key.decode()} is not '<number> kB': {value!r}")
    return _number(key, parts[0]) * 1024 // page_size


def parse_meminfo(data: bytes, page_size: int) -> Counters:
    """Counters from the text of ``/proc/meminfo`` (``Name:   value kB`` lines).

    meminfo has no cumulative counters: ``dirtied`` and ``written`` are None.

    Raises:
        CounterFormatError: a required key is missing or a needed value is malformed.
    """
    dirty = _meminfo_pages(data, b"Dirty:", page_size, True)
    writeback = _meminfo_pages(data, b"Writeback:", page_size, True)
    temp = _meminfo_pages(data, b"WritebackTmp:", page_size, False)
    return Counters(dirty=dirty, writeback=writeback + temp)
