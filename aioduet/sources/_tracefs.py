"""tracefs: the mount, private instances, event formats and the binary ring-buffer pages.

Kernel interface: tracefs (Linux >= 4.1; instances since 3.17 under debugfs), as root. No
ctypes: every operation is a plain ``open``/``read``/``write``/``mkdir``/``rmdir`` on tracefs
files. Layouts are read from the kernel, never hard-coded:

* ``events/header_page``: the sub-buffer header, ``u64 timestamp`` at 0, ``local_t commit``
  (8 bytes on 64-bit kernels, measured on 6.18) and the data from offset 16. ``commit``'s
  low 27 bits are the data length; bit 31 (``RB_MISSED_EVENTS``) says events were lost
  before this page, bit 30 (``RB_MISSED_STORED``) that their count follows the data as a
  ``long``.
* ``events/header_event``: each record starts with a u32 ``type_len:5, time_delta:27``;
  type_len 1..28 means ``type_len * 4`` data bytes follow, 0 that the length (counting
  itself) is in the next u32, 29 is padding (``time_delta`` 0: the rest of the page is
  empty), 30 a time extend and 31 an absolute time stamp (8 bytes each).
* ``events/<system>/<event>/format``: field offsets and sizes, and the ``ID`` that the
  record's ``common_type`` carries.

A private instance (``instances/aioduet-<pid>-<start time>``) keeps our events, filters and
buffer size away from every other tracefs user. The name lets a later process tell that the
owner is gone (:func:`remove_stale`). To remove it even when the owner dies by a signal, a
tiny guard process (``sh``) waits for the owner's end of a pipe to close and removes the
instance; a normal :meth:`Instance.close` removes it first and the guard then finds nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ..errors import SourceUnavailable

__all__ = [
    "PREFIX",
    "TRACEFS",
    "EventFormat",
    "Field",
    "Instance",
    "PageError",
    "PageHeader",
    "PageParser",
    "kernel_dev",
    "mount_tracefs",
    "parse_format",
    "parse_header_page",
    "process_start_time",
    "remove_instance",
    "remove_stale",
]

TRACEFS = "/sys/kernel/tracing"
"""Where tracefs is (or gets) mounted; tests may point it elsewhere."""
PROCFS = "/proc"
PREFIX = "aioduet-"
_NAME = re.compile(rf"^{PREFIX}(\d+)-(\d+)$")
_FIELD = re.compile(r"field:(.+?);\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d+);")
_MISSED_EVENTS = 1 << 31
_MISSED_STORED = 1 << 30
_LENGTH_MASK = (1 << 27) - 1
_TYPE_PADDING = 29


class PageError(ValueError):
    """A ring-buffer page that does not follow the kernel's layout."""


def kernel_dev(st_dev: int) -> int:
    """The kernel's internal ``dev_t`` (``major << 20 | minor``) that tracepoints record."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def user_dev(kdev: int) -> int:
    """The ``st_dev`` of a kernel-encoded ``dev_t``."""
    return os.makedev(kdev >> 20, kdev & ((1 << 20) - 1))


# -- formats -----------------------------------------------------------------------------


@attrs.frozen
class Field:
    """One field of an event record."""

    name: str
    """The C name, without array brackets."""
    offset: int
    """Bytes from the start of the record's data (where ``common_type`` is)."""
    size: int
    """Bytes."""
    signed: bool
    """Whether the C type is signed."""


@attrs.frozen
class EventFormat:
    """An event's ``format`` file: its id and its fields."""

    name: str
    """``system/event``."""
    id: int
    """The value of ``common_type`` in this event's records."""
    fields: dict[str, Field] = attrs.field(eq=False)
    """Fields by name."""

    def struct(self, names: Sequence[str]) -> struct.Struct:
        """A little-endian struct that unpacks ``common_type`` and then ``names``.

        Character arrays come out as :class:`bytes`; integers as ints.

        Raises:
            KeyError: a field is missing.
            ValueError: a field overlaps another, or the layout is too large for a struct.
        """
        layout = [self.fields["common_type"], *(self.fields[n] for n in names)]
        order = sorted(range(len(layout)), key=lambda i: layout[i].offset)
        if order != list(range(len(layout))):
            raise ValueError(f"{self.name}: fields must be asked for in offset order")
        fmt, pos = "<", 0
        for field in layout:
            if field.offset < pos:
                raise ValueError(f"{self.name}: field {field.name} overlaps the one before")
            if field.offset > pos:
                fmt += f"{field.offset - pos}x"
            if field.name in {"name", "comm"} or field.size not in (1, 2, 4, 8):
                fmt += f"{field.size}s"
            else:
                code = {1: "b", 2: "h", 4: "i", 8: "q"}[field.size]
                fmt += code if field.signed else code.upper()
            pos = field.offset + field.size
        try:
            return struct.Struct(fmt)
        except struct.error as exc:  # e.g. an offset or size beyond any record
            raise ValueError(f"{self.name}: {exc}") from None


def _ident(decl: str) -> str:
    """The C name in a field declaration (``unsigned long i_ino``, ``char name[32]``)."""
    words = decl.split()
    if not words:
        raise ValueError(f"a field declaration without a name: {decl!r}")
    return words[-1].split("[")[0]


def parse_format(name: str, text: str) -> EventFormat:
    """Parse an event's ``format`` file.

    Raises:
        ValueError: no ``ID`` line, no ``common_type`` field, or a field without a name.
    """
    match = re.search(r"^ID:\s*(\d+)", text, re.MULTILINE)
    if match is None:
        raise ValueError(f"{name}: no ID in format")
    fields: dict[str, Field] = {}
    for decl, offset, size, signed in _FIELD.findall(text):
        ident = _ident(decl)
        fields[ident] = Field(ident, int(offset), int(size), signed == "1")
    if "common_type" not in fields:
        raise ValueError(f"{name}: no common_type field")
    return EventFormat(name, int(match.group(1)), fields)


@attrs.frozen
class PageHeader:
    """The sub-buffer header layout, from ``events/header_page``."""

    commit_offset: int = 8
    commit_size: int = 8
    data_offset: int = 16

    @property
    def missed_size(self) -> int:
        """Bytes of the lost-events count stored after the data (a ``long``)."""
        return 8 if self.commit_size == 8 else 4


def parse_header_page(text: str) -> PageHeader:
    """Parse ``events/header_page`` (``timestamp``, ``commit``, ``data`` fields).

    Raises:
        ValueError: a field is missing or has a size this parser cannot read.
    """
    fields = {
        _ident(decl): (int(off), int(size))
        for decl, off, size, _signed in _FIELD.findall(text.replace("field: ", "field:"))
    }
    try:
        commit, data = fields["commit"], fields["data"]
    except KeyError as exc:
        raise ValueError(f"header_page lacks field {exc}") from None
    if commit[1] not in (4, 8) or fields.get("timestamp", (0, 8)) != (0, 8):
        raise ValueError(f"unsupported header_page layout: {fields}")
    return PageHeader(commit[0], commit[1], data[0])


# -- the page parser ---------------------------------------------------------------------


@attrs.define(eq=False)
class PageParser:
    """Parses ``trace_pipe_raw`` pages into one tuple per record of a known event.

    Each tuple is ``(common_type, *fields)`` as :meth:`EventFormat.struct` unpacks them;
    records of other event ids are skipped. :meth:`parse` never loops forever: every step
    advances by at least four bytes, and malformed input raises :class:`PageError`.

    Args:
        header: the page header layout.
        decoders: for each event id, the struct that unpacks its records.
    """

    header: PageHeader
    decoders: dict[int, struct.Struct]
    _unpack: dict[int, tuple[Callable[..., tuple[Any, ...]], int]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._unpack = {i: (s.unpack_from, s.size) for i, s in self.decoders.items()}

    def parse(
        self, page: bytes, out: list[tuple[Any, ...]], stamps: list[int] | None = None
    ) -> int:
        """Append the records of ``page`` to ``out``; returns the events lost before it.

        With ``stamps``, each record's time stamp (ns of the instance's trace clock) is
        appended to it too: the page's time stamp plus the deltas of the records up to it
        (time extends and absolute stamps included), as the kernel's reader computes it.

        Returns:
            0 when none were lost, the kernel's count when it stored one, and -1 when events
            were lost in an unknown number.

        Raises:
            PageError: the page is truncated or a record runs past its end.
        """
        header = self.header
        start = header.data_offset
        if len(page) < start:
            raise PageError(f"page of {len(page)} bytes is shorter than its header")
        commit = int.from_bytes(
            page[header.commit_offset : header.commit_offset + header.commit_size], "little"
        )
        end = start + (commit & _LENGTH_MASK)
        if end > len(page):
            raise PageError(f"page claims {end - start} data bytes, has {len(page) - start}")
        lost = 0
        if commit & _MISSED_EVENTS:
            lost = -1
            size = header.missed_size
            if commit & _MISSED_STORED and end + size <= len(page):
                lost = int.from_bytes(page[end : end + size], "little") or -1
        stamp = _U64(page, 0)[0] if stamps is not None else 0
        self._records(page, start, end, out, stamps=stamps, stamp=stamp)
        return lost

    def _records(  # noqa: PLR0912, PLR0915 - one flat loop over record types is the fast form
        self,
        page: bytes,
        off: int,
        end: int,
        out: list[tuple[Any, ...]],
        *,
        stamps: list[int] | None,
        stamp: int,
    ) -> None:
        u32 = _U32
        u32h = _U32_U16
        unpack = self._unpack
        append = out.append
        stamped = stamps is not None
        mark = stamps.append if stamps is not None else None
        last = end - 8  # the last offset at which a header plus a u32 fit
        while off < end:
            if off <= last:
                word, typ = u32h(page, off)
            else:
                if off + 4 > end:
                    raise PageError(f"record header at {off} runs past the data end {end}")
                word = u32(page, off)[0]
                typ = -1
            type_len = word & 31
            if 0 < type_len <= 28:
                data = off + 4
                length = type_len << 2
            elif type_len == 0:
                if off + 8 > end:
                    raise PageError(f"record at {off} lacks its length word")
                length = u32(page, off + 4)[0] - 4
                data = off + 8
                if length < 2:
                    raise PageError(f"record at {off} has a bad length {length + 4}")
                typ = -2
            elif type_len == _TYPE_PADDING:
                if word >> 5 == 0:
                    return  # the rest of the page is discarded
                if off + 8 > end:
                    raise PageError(f"padding at {off} lacks its length word")
                off += 4 + u32(page, off + 4)[0]
                continue
            else:  # time extend (30), absolute time stamp (31)
                if off + 8 > end:
                    raise PageError(f"time record at {off} runs past the data end {end}")
                if stamped:
                    value = (u32(page, off + 4)[0] << 27) | (word >> 5)
                    if type_len == _TYPE_TIME_EXTEND:
                        stamp += value
                    elif stamp & _STAMP_TOP:  # 59 bits; the top ones are the previous stamp's
                        value |= stamp & _STAMP_TOP  # (as the kernel's rb_fix_abs_ts)
                        stamp = value + (1 << 59) if value < stamp else value
                    else:
                        stamp = value
                off += 8
                continue
            nxt = data + length
            if nxt > end:
                raise PageError(f"record at {off} of {length} bytes runs past {end}")
            if typ < 0:
                typ = _U16(page, data)[0]
            if stamped:
                stamp += word >> 5
            found = unpack.get(typ)
            if found is not None:
                fn, size = found
                if size > length:
                    raise PageError(f"event {typ} at {off} has {length} bytes, needs {size}")
                append(fn(page, data))
                if mark is not None:
                    mark(stamp)
            off = nxt
        if off != end:
            raise PageError(f"last record ends at {off}, past the data end {end}")


_U32 = struct.Struct("<I").unpack_from
_U64 = struct.Struct("<Q").unpack_from
_TYPE_TIME_EXTEND = 30
_STAMP_TOP = ~((1 << 59) - 1) & ((1 << 64) - 1)
"""The bits of a time stamp that an absolute time stamp record does not carry."""
_U16 = struct.Struct("<H").unpack_from
_U32_U16 = struct.Struct("<IH").unpack_from


# -- processes and instances -------------------------------------------------------------


def process_start_time(pid: int, procfs: str = PROCFS) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks after boot), None if there is no such pid."""
    try:
        with open(f"{procfs}/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])  # fields[0] is field 3 (state)


def instance_name(pid: int | None = None) -> str:
    """``aioduet-<pid>-<start time>`` for this process (or ``pid``)."""
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}{pid}-{process_start_time(pid)}"


def _write(path: str, value: str, dir_fd: int | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: str, dir_fd: int | None = None) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    with open(fd) as f:
        return f.read()


def remove_instance(path: str, *, timeout: float = 2.0, dir_fd: int | None = None) -> bool:
    """Disable an instance's events and remove it; True when it is gone (or was already).

    ``path`` is relative to ``dir_fd`` when given (see :class:`Instance`). Retries ``EBUSY``
    (a reader's fds not yet closed) for up to ``timeout`` seconds.
    """
    with contextlib.suppress(OSError):
        _write(f"{path}/tracing_on", "0", dir_fd)
    with contextlib.suppress(OSError):
        _write(f"{path}/events/enable", "0", dir_fd)
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(path, dir_fd=dir_fd)
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        else:
            return True


def remove_stale(root: str = TRACEFS, procfs: str = PROCFS) -> list[str]:
    """Remove ``aioduet-*`` instances whose process is gone; returns their names.

    An instance is stale when its pid does not exist or was reused (another start time).
    """
    try:
        names = os.listdir(f"{root}/instances")
    except FileNotFoundError:
        return []
    removed = []
    for name in names:
        match = _NAME.match(name)
        if match is None:
            continue
        pid, start = int(match.group(1)), int(match.group(2))
        if process_start_time(pid, procfs) == start:
            continue
        if remove_instance(f"{root}/instances/{name}", timeout=0.2):
            removed.append(name)
    return removed


def mount_tracefs(root: str = TRACEFS) -> str:
    """Make sure tracefs is mounted at ``root`` (mounting it when absent); returns ``root``.

    Raises:
        SourceUnavailable: not root, or the mount failed.
    """
    if os.path.isdir(f"{root}/instances"):
        return root
    if os.geteuid() != 0:
        raise SourceUnavailable(
            errno.EPERM, f"tracefs is not mounted at {root} and we are not root"
        )
    mount = shutil.which("mount")
    if mount is None:
        raise SourceUnavailable(errno.ENOENT, "tracefs is not mounted and there is no mount(8)")
    done = subprocess.run(
        [mount, "-t", "tracefs", "nodev", root],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not os.path.isdir(f"{root}/instances"):
        msg = done.stderr.strip() or "no instances directory after mounting"
        raise SourceUnavailable(errno.ENODEV, f"cannot mount tracefs at {root}: {msg}")
    return root


# The guard: waits for EOF on stdin (the owner's end closes when it exits, however), then
# removes the instance, retrying while the dying owner's fds still hold it busy. It runs in
# the instances directory and names the instance relatively, so that it finds it even when
# tracefs was unmounted from its path meanwhile.
_GUARD = (
    'trap "" HUP INT TERM; read -r _; i=0; '
    'while [ -d "$1" ] && [ $i -lt 100 ]; do '
    'echo 0 > "$1/tracing_on" 2>/dev/null; echo 0 > "$1/events/enable" 2>/dev/null; '
    'rmdir "$1" 2>/dev/null || sleep 0.05; i=$((i+1)); done'
)


@attrs.define(eq=False)
class Instance:
    """A private tracefs instance with some events enabled; blocking calls (use a thread).

    Make one with :meth:`create`; :meth:`close` (or leaving ``with``) removes it, and is
    idempotent.

    Every operation goes through an fd of tracefs's ``instances`` directory, held from
    :meth:`create` to :meth:`close`, never through the mount point's path: tracefs unmounted
    (or mounted over) while the instance runs changes nothing for it, and it is still
    removed at the end, not left behind in the kernel.
    """

    path: str
    """The instance's directory (as it was reached when created)."""
    formats: dict[str, EventFormat]
    """Enabled events by ``system/event``."""
    missing: tuple[str, ...]
    """Requested events this kernel does not have."""
    header: PageHeader
    """The ring-buffer page layout."""
    page_size: int
    """Bytes per ring-buffer page (sub-buffer)."""
    clock: str = "local"
    """The trace clock of the records' time stamps: ``mono`` (``CLOCK_MONOTONIC``, as
    :func:`time.monotonic_ns`) where the kernel offers it, else the kernel's default."""
    _guard: subprocess.Popen[bytes] | None = None
    _dir_fd: int = -1
    """The fd of tracefs's ``instances`` directory."""
    _closed: bool = attrs.field(init=False, default=False)

    @property
    def name(self) -> str:
        """The instance's name: its directory's, in ``instances``."""
        return os.path.basename(self.path)

    @classmethod
    def create(
        cls,
        events: Iterable[str],
        *,
        buffer_kb: int = 1024,
        root: str = TRACEFS,
        name: str | None = None,
        guard: bool = True,
    ) -> Instance:
        """Mount tracefs if needed, clean stale instances, and set up a new instance.

        Args:
            events: ``system/event`` names to enable where they exist (see ``missing``).
            buffer_kb: per-CPU ring-buffer size (the kernel rounds it up to pages).
            root: the tracefs mount point.
            name: the instance name (default ``aioduet-<pid>-<start time>``).
            guard: start the guard process that removes the instance if we die.

        Raises:
            SourceUnavailable: tracefs cannot be used (not root, no instances, no events).
        """
        mount_tracefs(root)
        remove_stale(root)
        name = name or instance_name()
        path = f"{root}/instances/{name}"
        try:
            dir_fd = os.open(f"{root}/instances", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceUnavailable(exc.errno, f"cannot open {root}/instances: {exc}") from exc
        try:
            try:
                os.mkdir(name, dir_fd=dir_fd)
            except FileExistsError:
                remove_instance(name, dir_fd=dir_fd)
                os.mkdir(name, dir_fd=dir_fd)
        except OSError as exc:
            os.close(dir_fd)
            raise SourceUnavailable(exc.errno, f"cannot create {path}: {exc.strerror}") from exc
        instance = cls(path, {}, (), PageHeader(), 4096, dir_fd=dir_fd)
        try:
            # The header is the same for every instance: read from the top of this tracefs.
            instance.header = parse_header_page(_read("../events/header_page", dir_fd))
            with contextlib.suppress(FileNotFoundError, ValueError):
                instance.page_size = int(instance._read("buffer_subbuf_size_kb")) * 1024
            if guard:
                instance._start_guard()
            instance._write("buffer_size_kb", str(max(1, buffer_kb)))
            # Time stamps in CLOCK_MONOTONIC (Linux >= 3.10) can be compared with the time a
            # reader starts reading: records of several CPUs are put in order against it.
            with contextlib.suppress(OSError):
                instance._write("trace_clock", "mono")
            with contextlib.suppress(OSError):
                chosen = re.search(r"\[(\S+)\]", instance._read("trace_clock"))
                instance.clock = chosen.group(1) if chosen else instance.clock
            # Readers are woken as soon as a buffer holds anything, not once half full (the
            # default): the latency from an event to its task is then the loop's, not the
            # drain timer's.
            with contextlib.suppress(FileNotFoundError):
                instance._write("buffer_percent", "0")
            missing = []
            for event in events:
                try:
                    fmt = parse_format(event, instance._read(f"events/{event}/format"))
                except FileNotFoundError:
                    missing.append(event)
                    continue
                instance.formats[event] = fmt
            instance.missing = tuple(missing)
            if not instance.formats:
                raise SourceUnavailable(  # noqa: TRY301 - the handler below must clean up
                    errno.ENOENT, f"none of the events exist: {missing}"
                )
        except BaseException:
            instance.close()
            raise
        return instance

    def _read(self, relative: str) -> str:
        return _read(f"{self.name}/{relative}", self._dir_fd)

    def _write(self, relative: str, value: str) -> None:
        _write(f"{self.name}/{relative}", value, self._dir_fd)

    def _start_guard(self) -> None:
        self._guard = subprocess.Popen(
            ["/bin/sh", "-c", _GUARD, "aioduet-guard", self.name],
            cwd=os.path.dirname(self.path),  # the instances directory stays its cwd
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a signal to our process group must not reach it
            close_fds=True,
        )

    def set_filter(self, event: str, expression: str | None) -> None:
        """Set an event's kernel filter (None or ``""`` clears it)."""
        self._write(f"events/{event}/filter", expression or "0")

    def enable(self, on: bool = True) -> None:
        """Enable (or disable) every event in :attr:`formats`."""
        for event in self.formats:
            self._write(f"events/{event}/enable", "1" if on else "0")

    def cpus(self) -> list[int]:
        """The CPUs that have a ring buffer."""
        fd = os.open(f"{self.name}/per_cpu", os.O_RDONLY | os.O_DIRECTORY, dir_fd=self._dir_fd)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        return sorted(int(n[3:]) for n in names if n.startswith("cpu") and n[3:].isdigit())

    def open_pipe(self, cpu: int) -> int:
        """A non-blocking fd of ``per_cpu/cpu<N>/trace_pipe_raw`` (the caller closes it)."""
        return os.open(
            f"{self.name}/per_cpu/cpu{cpu}/trace_pipe_raw",
            os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC,
            dir_fd=self._dir_fd,
        )

    def parser(self, fields: Mapping[str, Sequence[str]]) -> PageParser:
        """A page parser for the enabled events among ``fields`` (``event -> field names``)."""
        decoders = {
            fmt.id: fmt.struct(fields[event])
            for event, fmt in self.formats.items()
            if event in fields
        }
        return PageParser(self.header, decoders)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> bool:
        """Disable the events and remove the instance (close its fds first); idempotent.

        Returns:
            Whether the instance is gone.
        """
        if self._closed or self._dir_fd < 0:
            return self._closed
        gone = remove_instance(self.name, dir_fd=self._dir_fd)
        guard = self._guard
        if guard is not None:
            with contextlib.suppress(OSError):
                if guard.stdin is not None:
                    guard.stdin.close()
            try:
                guard.wait(5)
            except subprocess.TimeoutExpired:
                guard.kill()
                guard.wait()
            self._guard = None
        if not gone:
            try:
                os.stat(self.name, dir_fd=self._dir_fd)
            except OSError:
                gone = True
        # Left behind (still busy), the instance goes with the next create of this process
        # (same name) or, once the process is gone, with anyone's clean-up of stale ones.
        # The fd goes in any case.
        os.close(self._dir_fd)
        self._dir_fd = -1
        self._closed = gone
        return gone

    def __enter__(self) -> Instance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
