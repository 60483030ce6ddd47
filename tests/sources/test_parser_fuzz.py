"""Kernel-facing parsers and the sources around them under structured fuzzing.

Every property starts from valid input (pages, streams and files as the kernel writes them,
built here or captured from this kernel's tracefs), corrupts it the ways a wrong layout or a
bug would (flipped bytes, lengths that lie, commit sizes beyond the page, truncation, huge
or zero lengths, junk values) and checks one contract:

* the parser returns, or raises only its documented "clean" error (below); anything else
  (IndexError, struct.error, UnicodeDecodeError, ZeroDivisionError, OverflowError,
  MemoryError, RecursionError...) is a bug;
* it terminates: every call runs under :func:`watchdog` (SIGALRM, which interrupts any
  Python loop) besides hypothesis' deadline, and inputs are bounded;
* at the source level, the corrupted read becomes a lost-events signal (``sink.lost`` or the
  per-scope overflow plus a rescan) or a counted error, never an exception out of the
  source, and the source still handles the next good input.

Unstructured fuzzing of the same parsers (random bytes only) lives beside their unit tests:
test_tracefs.py, test_inotify_wire.py, test_writeback.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import struct
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import pytest
from hintrig import FakeChecker, recording_sink
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aioduet import Event
from aioduet._paths import PathIndex
from aioduet.sources import Sink
from aioduet.sources import _fanotify_wire as fwire
from aioduet.sources import _inotify_wire as iwire
from aioduet.sources import _tracefs as tf
from aioduet.sources import fanotify as fanotify_module
from aioduet.sources._procfs import CounterFormatError, Counters, parse_meminfo, parse_vmstat
from aioduet.sources.fanotify import FanotifySource
from aioduet.sources.inotify import InotifySource
from aioduet.sources.tracepoints import ADD, DELETE, EVENTS, TracepointSource
from aioduet.sources.writeback import WritebackSource
from aioduet.store import Observation, Store

WATCHDOG = 2.0
"""Seconds any one parse (or one source round) may take before it counts as a hang."""
FUZZ = settings(
    deadline=timedelta(seconds=1),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Hung(Exception):
    """Raised by :func:`watchdog` in the main thread: the code under test did not return."""


@contextlib.contextmanager
def watchdog(seconds: float = WATCHDOG) -> Iterator[None]:
    """Fail with :class:`Hung` if the body runs longer than ``seconds``.

    The alarm repeats, so a loop that swallows the first one still ends.
    """

    def fire(signum: int, frame: types.FrameType | None) -> None:
        raise Hung(f"no return within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.25)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_the_watchdog_ends_an_infinite_loop() -> None:
    with pytest.raises(Hung), watchdog(0.05):
        while True:
            pass


def seqpacket() -> tuple[socket.socket, socket.socket]:
    """A writer and a non-blocking reader that, like a kernel event fd, never split a write."""
    writer, reader = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader.setblocking(False)
    return writer, reader


# -- mutations shared by the binary formats ------------------------------------------------

#: u32 values that mean something to one of the parsers: record lengths of 0, 1, 3, 4 and
#: 2**32 - 1, every ring-buffer type_len that changes the control flow (0 length word,
#: 28 longest inline, 29 padding with and without a time delta, 30 time extend, 31 time stamp),
#: the ring buffer's largest commit length and its lost-events flags.
SPECIAL_U32 = (
    0,
    1,
    3,
    4,
    16,
    28,
    29,
    30,
    31,
    (1 << 5) | 0,
    (1 << 5) | 28,
    (1 << 5) | 29,
    (7 << 5) | 30,
    (1 << 27) - 1,
    1 << 30,
    1 << 31,
    0xFFFF_FFE0,
    0xFFFF_FFFF,
)


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """1-4 edits as ``(kind, position or length, value)``; :func:`mutate` applies them."""
    kinds = st.sampled_from(["flip", "word", "truncate", "extend", "zero", "splice"])
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(kinds)
        where = draw(st.integers(0, 1 << 16))
        if kind == "word":
            value = draw(st.sampled_from(SPECIAL_U32) | st.integers(0, 2**32 - 1))
        elif kind == "flip":
            value = draw(st.integers(1, 255))
        else:
            value = draw(st.integers(0, 64))
        out.append((kind, where, value))
    return out


def mutate(data: bytes, edits: Sequence[tuple[str, int, int]], start: int = 0) -> bytes:
    """Apply :func:`mutations` to ``data``; positions wrap into ``data[start:]``."""
    buf = bytearray(data)
    for kind, where, value in edits:
        span = max(1, len(buf) - start)
        at = start + where % span
        if kind == "flip" and at < len(buf):
            buf[at] ^= value
        elif kind == "word":
            at -= (at - start) % 4
            buf[at : at + 4] = value.to_bytes(4, "little")
        elif kind == "truncate":
            del buf[at:]
        elif kind == "extend":
            buf += bytes([value]) * value
        elif kind == "zero":
            buf[at : at + value] = bytes(len(buf[at : at + value]))
        elif kind == "splice":  # a record's bytes repeated or cut: lengths no longer line up
            buf[at:at] = buf[at + value : at + 2 * value]
    return bytes(buf)


# -- tracefs: the ring-buffer page parser --------------------------------------------------

ROOT = tf.mount_tracefs()
HEADER = tf.parse_header_page(Path(ROOT, "events/header_page").read_text())
FORMATS = {
    name: tf.parse_format(name, Path(ROOT, "events", name, "format").read_text())
    for name in EVENTS
    if Path(ROOT, "events", name, "format").exists()
}
ADD_FMT, DEL_FMT = FORMATS[ADD], FORMATS[DELETE]
PAGE_SIZE = 4096
ARITY = {FORMATS[name].id: 1 + len(EVENTS[name]) for name in FORMATS}
"""Tuple length of each decoded event's records."""


def parser(header: tf.PageHeader = HEADER) -> tf.PageParser:
    """The parser the tracepoints source uses, for every event this kernel has."""
    return tf.PageParser(header, {fmt.id: fmt.struct(EVENTS[n]) for n, fmt in FORMATS.items()})


def event_data(fmt: tf.EventFormat, **values: int | bytes) -> bytes:
    """A record's data laid out from its format file (unset fields are zero)."""
    size = max(f.offset + f.size for f in fmt.fields.values())
    data = bytearray(size + (-size % 4))
    data[0:2] = fmt.id.to_bytes(2, "little")
    for name, value in values.items():
        field = fmt.fields[name]
        raw = value if isinstance(value, bytes) else value.to_bytes(field.size, "little")
        data[field.offset : field.offset + len(raw)] = raw
    return bytes(data)


def record(data: bytes, *, long: bool = False, delta: int = 1) -> bytes:
    if long or len(data) > 112:
        return struct.pack("<II", delta << 5, len(data) + 4) + data
    return struct.pack("<I", (delta << 5) | (len(data) // 4)) + data


def page(body: bytes, *, missed: int | None = None) -> bytes:
    """A whole ``trace_pipe_raw`` page: header, ``body`` and the stored lost count."""
    commit = len(body)
    tail = b""
    if missed is not None:
        commit |= 1 << 31
        if missed:
            commit |= 1 << 30
            tail = missed.to_bytes(HEADER.missed_size, "little")
    head = bytearray(HEADER.data_offset)
    head[0:8] = (123456789).to_bytes(8, "little")
    head[HEADER.commit_offset : HEADER.commit_offset + HEADER.commit_size] = commit.to_bytes(
        HEADER.commit_size, "little"
    )
    out = bytes(head) + body + tail
    return out + bytes(PAGE_SIZE - len(out))


def add(ino: int, index: int, dev: int = 5, order: int = 0, fmt: tf.EventFormat = ADD_FMT) -> bytes:
    return event_data(fmt, i_ino=ino, index=index, s_dev=dev, order=order)


def synthetic_pages() -> list[bytes]:
    """Valid pages with every record kind the parser knows, and the lost-events flags."""
    other = struct.pack("<H", 0xFFFF) + bytes(10)  # an event nobody decodes
    body = (
        record(add(77, 0, order=9))
        + struct.pack("<II", (3 << 5) | 30, 1)  # time extend
        + record(other)
        + struct.pack("<II", (1 << 5) | 29, 12)  # padding with a length word
        + bytes(8)
        + struct.pack("<II", 31, 0)  # absolute time stamp
        + record(add(77, 512, fmt=DEL_FMT), long=True)  # type_len 0: length in the next word
    )
    for name, values in (
        ("writeback/writeback_dirty_folio", {"name": b"254:0", "ino": 77, "index": 3}),
        ("writeback/sb_clear_inode_writeback", {"dev": 5, "ino": 77}),
        ("writeback/writeback_single_inode", {"name": b"254:0", "ino": 77, "wrote": 1}),
    ):
        if name in FORMATS:
            body += record(event_data(FORMATS[name], **values))
    many = b"".join(record(add(1000 + i, i)) for i in range(60))
    return [
        page(body),
        page(body, missed=0),
        page(many, missed=42),
        page(record(add(1, 2)) + struct.pack("<I", 29) + b"\xff" * 40),  # null padding
        page(b""),
    ]


@cache
def captured_pages() -> tuple[bytes, ...]:
    """Real pages from this kernel: filemap events of a file written, dropped and read."""
    dev = os.stat(tempfile.gettempdir()).st_dev
    pages: list[bytes] = []
    with tf.Instance.create([ADD, DELETE], buffer_kb=64) as inst:
        for event in (ADD, DELETE):
            inst.set_filter(event, f"s_dev == {tf.kernel_dev(dev)}")
        inst.enable()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "f")
            path.write_bytes(os.urandom(1 << 18))
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                while os.read(fd, 1 << 16):
                    pass
            finally:
                os.close(fd)
        inst.enable(False)
        for cpu in inst.cpus():
            fd = inst.open_pipe(cpu)
            try:
                while len(pages) < 64:
                    try:
                        raw = os.read(fd, inst.page_size)
                    except BlockingIOError:
                        break
                    if not raw:
                        break
                    pages.append(raw)
            finally:
                os.close(fd)
    return tuple(pages)


def test_real_pages_were_captured_and_parse() -> None:
    pages = captured_pages()
    assert pages, "reading and dropping a file on the temp dir's filesystem gave no events"
    out: list[tuple[Any, ...]] = []
    for raw in pages:
        parser().parse(raw, out)
    assert {r[0] for r in out} <= {ADD_FMT.id, DEL_FMT.id} and out


SEED_PAGES = st.sampled_from(synthetic_pages()) | st.deferred(
    lambda: st.sampled_from(captured_pages() or tuple(synthetic_pages()))
)


COMMITS = (
    None,  # as the seed and its mutations left it
    0,
    1,
    4,
    PAGE_SIZE - HEADER.data_offset,
    PAGE_SIZE,
    (1 << 27) - 1,
    (1 << 31) | (1 << 30) | (PAGE_SIZE - HEADER.data_offset),  # a stored lost count, no room
    (1 << 31) | (1 << 30) | 44,
    2**64 - 1,
)
"""Values the page's ``commit`` is overwritten with: lengths around and beyond the page, and
the lost-events flags with and without room for the count."""


def commit_field(raw: bytes, header: tf.PageHeader = HEADER) -> int:
    field = raw[header.commit_offset : header.commit_offset + header.commit_size]
    return int.from_bytes(field, "little")


def check_page(raw: bytes, header: tf.PageHeader = HEADER) -> list[tuple[Any, ...]] | None:
    """Parse ``raw`` under the contract; the records, or None when it was refused cleanly."""
    out: list[tuple[Any, ...]] = []
    try:
        with watchdog():
            missed = parser(header).parse(raw, out)
    except tf.PageError:
        return None
    lost_flag = bool(commit_field(raw, header) & (1 << 31))
    assert isinstance(missed, int)
    assert (missed != 0) == lost_flag and missed >= -1
    for rec in out:
        assert ARITY[rec[0]] == len(rec)
    return out


@settings(FUZZ, max_examples=1000)
@given(SEED_PAGES, mutations(), st.sampled_from(COMMITS))
@example(page(b""), [("flip", 0, 0)], PAGE_SIZE)  # commit: a whole page of data after the header
@example(page(record(add(1, 2))), [("word", 0, 0), ("word", 4, 0xFFFF_FFFF)], None)
@example(page(record(add(1, 2))), [("word", 0, (1 << 5) | 29), ("word", 4, 2**32 - 4)], None)
@example(page(record(add(1, 2))), [("word", 0, (7 << 5) | 30)], None)  # extend past the end
def test_page_parser_on_corrupted_pages(
    seed: bytes, edits: list[tuple[str, int, int]], commit: int | None
) -> None:
    """Contract: :meth:`PageParser.parse` returns the lost count (non-zero exactly when the
    page's ``RB_MISSED_EVENTS`` bit is set) and records of decoded events only, or raises
    :class:`PageError`; nothing else, and it terminates."""
    raw = bytearray(mutate(seed, edits, HEADER.data_offset))
    if commit is not None and len(raw) >= HEADER.data_offset:
        size = HEADER.commit_size
        raw[HEADER.commit_offset : HEADER.commit_offset + size] = (
            commit % (1 << 8 * size)
        ).to_bytes(size, "little")
    check_page(bytes(raw))


@settings(FUZZ, max_examples=300)
@given(
    st.sampled_from([HEADER, tf.PageHeader(8, 4, 12), tf.PageHeader(8, 8, 4096)]),
    st.binary(max_size=PAGE_SIZE + 64),
)
def test_page_parser_on_arbitrary_pages_of_any_header_layout(
    header: tf.PageHeader, raw: bytes
) -> None:
    """Contract as above, for the 32-bit layout (4-byte commit) and a header-only page size."""
    check_page(raw, header)


# -- tracefs: format and header_page text --------------------------------------------------

FORMAT_TEXTS = {name: Path(ROOT, "events", name, "format").read_text() for name in FORMATS} | {
    "header_page": Path(ROOT, "events/header_page").read_text()
}
TOKENS = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "\n",
        ";",
        ":",
        "field:",
        "field: ",
        " field:  ;",
        "offset:",
        "size:",
        "signed:",
        "ID:",
        "common_type",
        "[",
        "]",
        "0",
        "9" * 25,
        "9" * 5000,
        "\u0663",  # an Arabic-Indic digit: re's \d and int() accept it
        "\x00",
        "\udcff",
    ]
)


@settings(FUZZ, max_examples=500)
@given(
    st.sampled_from(sorted(FORMAT_TEXTS)),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 40), TOKENS), min_size=1, max_size=4),
)
# Regressions: a declaration of blanks raised IndexError; offsets and sizes beyond any
# struct raised struct.error.
@example("header_page", [(0, 0, "\tfield:  ;\toffset:0;\tsize:8;\tsigned:0;\n")])
@example(ADD, [(0, 0, "\tfield: ;\toffset:8;\tsize:4;\tsigned:0;\n")])
@example(ADD, [(-1, 0, "\tfield:int i_ino;\toffset:8;\tsize:99999999999999999999;\tsigned:0;\n")])
@example(ADD, [(-1, 0, "\tfield:int i_ino;\toffset:99999999999999999999;\tsize:8;\tsigned:0;\n")])
def test_format_text_parsers_on_corrupted_files(
    name: str, edits: list[tuple[int, int, str]]
) -> None:
    """Contract: :func:`parse_format` and :func:`parse_header_page` raise only ValueError;
    :meth:`EventFormat.struct` only KeyError (a field missing) or ValueError; whatever they
    accept gives a parser that keeps the page parser's contract."""
    text = FORMAT_TEXTS[name]
    for where, cut, token in edits:
        at = len(text) if where < 0 else where % (len(text) + 1)
        text = text[:at] + token + text[at + cut :]
    with watchdog():
        if name == "header_page":
            try:
                header = tf.parse_header_page(text)
            except ValueError:
                return
            assert header.commit_size in (4, 8)
            check_page(synthetic_pages()[0], header)
            return
        try:
            fmt = tf.parse_format(name, text)
            decoder = fmt.struct(EVENTS[name])
        except (KeyError, ValueError):
            return
    check = tf.PageParser(HEADER, {fmt.id: decoder})
    for raw in synthetic_pages():
        with contextlib.suppress(tf.PageError), watchdog():
            check.parse(raw, [])


# -- tracefs: the tracepoints source -------------------------------------------------------

GOOD_INO, GOOD_INDEX, GOOD_KDEV = 987_654_321, 4242, (8 << 20) | 1


class TraceRig:
    """A tracepoints source bound to this kernel's formats, without an instance.

    The store has no task, so ingestion costs nothing; observations are seen through the
    sink's mirror. Pages are fed through a SOCK_SEQPACKET pair: one read, one page.
    """

    def __init__(self, store: Store | None = None) -> None:
        self.overflows: list[str | None] = []
        self.seen: list[Observation] = []
        self.checker = FakeChecker()
        sink = Sink(store or Store(1), PathIndex(), overflow=self.overflows.append)
        sink.attach(self.checker)
        sink.attach_mirror(self.seen.extend)
        self.source = TracepointSource(sink)
        instance = tf.Instance("/nonexistent", dict(FORMATS), (), HEADER, PAGE_SIZE)
        self.parser = self.source.bind(instance)

    def feed(self, *pages: bytes) -> None:
        writer, reader = seqpacket()
        with writer, reader:
            for raw in pages:
                writer.send(raw)
            with watchdog():
                fds = [reader.fileno()]
                for _ in pages:  # a zero-length page ends one drain, like EOF
                    self.source.drain(fds, self.parser, PAGE_SIZE, ordered=False)
                assert self.source.drain(fds, self.parser, PAGE_SIZE, ordered=False) == 0

    def good_seen(self) -> bool:
        key = (tf.user_dev(GOOD_KDEV), GOOD_INO, 0)
        return any(
            k == key and first <= GOOD_INDEX < first + count and state == int(Event.ADDED)
            for k, first, count, state in self.seen
        )


GOOD_PAGE = page(record(add(GOOD_INO, GOOD_INDEX, GOOD_KDEV)))
RECORD = len(record(add(1, 2)))


@settings(FUZZ, max_examples=400)
@given(SEED_PAGES, mutations())
# Regressions: a folio of 2**255 pages was walked page by page (a hang); the record before
# one that runs past the page was handed over although the page was reported lost.
@example(page(record(add(1, 2, order=255))), [("flip", 0, 0)])
@example(page(record(add(1, 2)) * 2), [("word", RECORD, 0), ("word", RECORD + 4, 2**32 - 1)])
def test_tracepoints_source_on_corrupted_pages(
    seed: bytes, edits: list[tuple[str, int, int]]
) -> None:
    """Contract at the source: :meth:`TracepointSource.drain` never raises; an unparsable page
    or one flagged as lost becomes ``sink.lost(None)`` (OVERFLOW to every task and a rescan)
    and hands over none of its records; the next good page is handled."""
    raw = mutate(seed, edits, HEADER.data_offset)[: PAGE_SIZE + 64] or b"\0"  # b"" is EOF
    rig = TraceRig()
    rig.feed(raw, GOOD_PAGE)
    expected = check_page(raw[:PAGE_SIZE])
    assert rig.good_seen()
    status = rig.source.status()
    filemap = (ADD_FMT.id, DEL_FMT.id)
    if expected is None:  # refused by the parser
        assert rig.overflows and rig.checker.rescans and status.errors
        assert len(rig.seen) == 1, "the records before the error were dropped"
    elif commit_field(raw) & (1 << 31) or any(r[0] in filemap and r[4] > 20 for r in expected):
        assert rig.overflows and rig.checker.rescans
    else:
        assert not rig.overflows
    assert rig.overflows == [None] * status.overflows


def test_an_impossible_folio_order_is_lost_not_walked() -> None:
    # Regression: a record with order 255 made the store walk 2**255 pages (a hang).
    store = Store(1, relevance=lambda key, slot: True)
    slot = store.add_slot(Event.ADDED | Event.REMOVED)
    rig = TraceRig(store)
    rig.feed(page(record(add(1, 2, order=255)) + record(add(1, 9, order=1))), GOOD_PAGE)
    assert rig.overflows == [None] and rig.checker.rescans == [None]
    status = rig.source.status()
    assert status.lost == 1 and "order" in (status.last_error or "")
    drained = store.drain(slot, 1 << 30)
    assert [(first, count) for _, first, count, _ in drained] == [(9, 2), (GOOD_INDEX, 1)]


# -- /proc counters ------------------------------------------------------------------------

PROCFS = Path(__file__).parent / "procfs"
VMSTAT = (PROCFS / "linux-6.18" / "vmstat").read_bytes()
MEMINFO = (PROCFS / "linux-6.18" / "meminfo").read_bytes()
OLD_VMSTAT = (PROCFS / "with-temp" / "vmstat").read_bytes()
VALUES = st.sampled_from(
    [
        b"",
        b"-1",
        b"+1",
        b"1e3",
        b"0x10",
        b"1_000",
        b"\xd9\xa3",  # an Arabic-Indic digit in UTF-8
        b"\xff",
        b"\x00",
        b"9" * 20,
        b"9" * 21,
        b"9" * 5000,
        b"12 kB",
        b"12 kB kB",
        b"12 MB",
        b"12\r",
        b" 12",
    ]
)


@st.composite
def corrupted_counter_files(draw: st.DrawFn) -> bytes:
    """A real vmstat or meminfo with some lines deleted, duplicated, re-valued or joined."""
    data = draw(st.sampled_from([VMSTAT, MEMINFO, OLD_VMSTAT]))
    lines = data.split(b"\n")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "value", "join", "crlf", "cut"]))
        if kind == "delete":
            del lines[at]
        elif kind == "duplicate":
            lines.insert(at, lines[at])
        elif kind == "value":
            key = lines[at].split(b" ", 1)[0]
            lines[at] = key + b" " + draw(VALUES)
        elif kind == "join" and at + 1 < len(lines):
            lines[at : at + 2] = [lines[at] + lines[at + 1]]
        elif kind == "crlf":
            lines[at] += b"\r"
        elif kind == "cut":
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
        if not lines:
            lines = [b""]
    return b"\n".join(lines)


def counters_or_refusal(parse: Callable[[bytes], Counters], data: bytes) -> Counters | None:
    try:
        with watchdog():
            got = parse(data)
    except CounterFormatError:
        return None
    values = (got.dirty, got.writeback, got.dirtied, got.written)
    assert all(v is None or (isinstance(v, int) and v >= 0) for v in values)
    return got


@settings(FUZZ, max_examples=500)
@given(corrupted_counter_files())
@example(VMSTAT.replace(b"nr_dirty ", b"nr_dirty \xd9\xa3\n#", 1))
def test_counter_parsers_on_corrupted_files(data: bytes) -> None:
    """Contract: :func:`parse_vmstat` and :func:`parse_meminfo` give non-negative integer
    counters or raise :class:`CounterFormatError`; nothing else."""
    counters_or_refusal(parse_vmstat, data)
    counters_or_refusal(lambda d: parse_meminfo(d, 4096), data)


@pytest.fixture(scope="module")
def procfs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proc")


def rewrite(path: Path, data: bytes) -> None:
    """Replace a file's contents in place (same inode, as procfs files stay the same)."""
    with path.open("r+b" if path.exists() else "wb") as f:
        f.write(data)
        f.truncate()


@settings(FUZZ, max_examples=150)
@given(corrupted_counter_files(), corrupted_counter_files())
def test_writeback_source_on_corrupted_files(
    procfs_dir: Path, vmstat: bytes, meminfo: bytes
) -> None:
    """Contract at the source: :meth:`WritebackSource.poll_once` never raises; a file it cannot
    parse is a counted error; good files on the next poll are read again."""
    rewrite(procfs_dir / "vmstat", VMSTAT)
    rewrite(procfs_dir / "meminfo", MEMINFO)
    source = WritebackSource(Sink(Store(1), PathIndex()), procfs=str(procfs_dir))
    try:
        source.poll_once()
        rewrite(procfs_dir / "vmstat", vmstat)
        rewrite(procfs_dir / "meminfo", meminfo)
        with watchdog():
            source.poll_once()
        vm_ok = counters_or_refusal(parse_vmstat, vmstat) is not None
        mem_ok = counters_or_refusal(lambda d: parse_meminfo(d, 4096), meminfo) is not None
        assert source.status().errors == (not vm_ok) + (not vm_ok and not mem_ok)
        rewrite(procfs_dir / "vmstat", VMSTAT)
        source.poll_once()
        assert source.counters == parse_vmstat(VMSTAT)
    finally:
        source._vmstat.close()
        source._meminfo.close()


# -- inotify -------------------------------------------------------------------------------


def inotify_record(wd: int, mask: int, cookie: int = 0, name: bytes = b"") -> bytes:
    padded = b""
    if name:
        size = (len(name) + 1 + 15) // 16 * 16
        padded = name + b"\0" * (size - len(name))
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


NAMES = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\0", b"") or b"x")
MASKS = st.sampled_from(
    [
        iwire.IN_ACCESS,
        iwire.IN_MODIFY,
        iwire.IN_CLOSE_WRITE,
        iwire.IN_CREATE,
        iwire.IN_DELETE,
        iwire.IN_MOVED_FROM,
        iwire.IN_MOVED_TO,
        iwire.IN_CREATE | iwire.IN_ISDIR,
        iwire.IN_Q_OVERFLOW,
        iwire.IN_IGNORED,
        iwire.IN_MOVE_SELF,
    ]
)
STREAMS = st.lists(
    st.builds(inotify_record, st.sampled_from([-1, 1, 2, 3]), MASKS, st.integers(0, 3), NAMES),
    min_size=1,
    max_size=12,
).map(b"".join)


def check_inotify(buf: bytes) -> list[iwire.RawEvent] | None:
    """Both parsers under the contract; the events, or None when refused cleanly."""
    hints: set[tuple[int, bytes]] = set()
    others: list[iwire.RawEvent] = []
    with watchdog():
        try:
            events = iwire.parse_events(buf)
        except iwire.InotifyWireError:
            events = None
        try:
            count = iwire.split_events(buf, hints, others)
        except iwire.InotifyWireError:
            assert events is None
        else:
            assert events is not None and count == len(events)
    for _, _, _, name in [*(events or ()), *others]:
        assert "\0" not in name
    for _, raw in hints:
        assert "\0" not in iwire.decode_hint(raw)
    return events


@settings(FUZZ, max_examples=800)
@given(STREAMS, mutations())
@example(inotify_record(1, iwire.IN_ACCESS, name=b"a"), [("word", 12, 0xFFFF_FFFF)])
@example(inotify_record(1, iwire.IN_ACCESS, name=b"a"), [("word", 12, 3)])  # len not 16-aligned
@example(inotify_record(1, iwire.IN_ACCESS, name=b"a"), [("word", 12, 0)])  # zero-length name
@example(
    inotify_record(1, iwire.IN_ACCESS, name=b"abc"), [("flip", 17, 1)]
)  # b"a\0c": a NUL inside
def test_inotify_parsers_on_corrupted_streams(
    buf: bytes, edits: list[tuple[str, int, int]]
) -> None:
    """Contract: :func:`parse_events` and :func:`split_events` agree, raise only
    :class:`InotifyWireError`, and give names without NULs (a C string ends at the first one;
    a NUL inside a path makes ``os.open`` raise ValueError in the residency scanner)."""
    check_inotify(mutate(buf, edits))


def test_an_inotify_name_ends_at_its_first_nul() -> None:
    # Regression: only trailing NULs were stripped, so b"a\0c" became the path ".../a\0c".
    buf = struct.pack("iIII", 1, iwire.IN_ACCESS, 0, 16) + b"a\0c" + bytes(13)
    assert iwire.parse_events(buf) == [(1, iwire.IN_ACCESS, 0, "a")]
    hints: set[tuple[int, bytes]] = set()
    iwire.split_events(buf, hints, [])
    assert [iwire.decode_hint(raw) for _, raw in hints] == ["a"]


async def inotify_round(corrupted: bytes) -> tuple[InotifySource, FakeChecker, list[str | None]]:
    """Drive the inotify source's reader: ``corrupted``, then one good hint."""
    overflows: list[str | None] = []
    sink = recording_sink(overflows)
    checker = FakeChecker()
    sink.attach(checker)
    source = InotifySource(sink, coalesce=0)
    source.add_scope("/scope")
    source._table.bind(1, "/scope")
    writer, reader = seqpacket()
    with writer, reader:
        async with anyio.create_task_group() as tg:
            tg.start_soon(source._read, reader.fileno())
            with anyio.fail_after(WATCHDOG):
                if corrupted:
                    writer.send(corrupted)
                    while source._wakeups < 1:  # noqa: ASYNC110 - the reader has no event to wait on
                        await anyio.sleep(0.001)
                # Whatever the corrupted records did to the watch table, this one is known.
                source._table.bind(99, "/scope/good")
                writer.send(inotify_record(99, iwire.IN_MODIFY, name=b"file"))
                while "/scope/good/file" not in checker.checked:  # noqa: ASYNC110 - as above
                    await anyio.sleep(0.001)
            tg.cancel_scope.cancel()
    return source, checker, overflows


@settings(FUZZ, max_examples=100)
@given(STREAMS, mutations())
@example(inotify_record(1, iwire.IN_ACCESS, name=b"a"), [("word", 12, 0xFFFF_FFFF)])
@example(inotify_record(1, iwire.IN_ACCESS, name=b"abc"), [("flip", 17, 1)])
def test_inotify_source_on_corrupted_reads(buf: bytes, edits: list[tuple[str, int, int]]) -> None:
    """Contract at the source: a read that is not whole records is a counted error and an
    overflow of every scope (OVERFLOW to its tasks, then a re-walk and a rescan); no
    exception leaves the reader, no path with a NUL reaches the checker, and the next read
    is handled."""
    corrupted = mutate(buf, edits)[: 1 << 16]
    events = check_inotify(corrupted)
    source, checker, overflows = anyio.run(inotify_round, corrupted)
    status = source.status()
    if events is None:
        assert status.errors >= 1 and "/scope" in overflows
        assert source._rewalk_queued, "the rescan follows the re-walk"
    assert all("\0" not in path for path in checker.checked + checker.gone + checker.trees)
    assert status.overflows == len(overflows)


# -- fanotify ------------------------------------------------------------------------------

FSID = bytes(range(1, 9))


def fid_key(ino: int, gen: int = 7) -> bytes:
    handle = struct.pack("=II", ino, gen)
    return FSID + struct.pack("=Ii", len(handle), 1) + handle


def info(kind: int, key: bytes, name: bytes | None = None) -> bytes:
    body = key if name is None else key + name + b"\0"
    body += b"\0" * (-(4 + len(body)) % 4)
    return struct.pack("=BBH", kind, 0, 4 + len(body)) + body


def fan_event(mask: int, *records: bytes, fd: int = -1) -> bytes:
    data = b"".join(records)
    return fwire.METADATA.pack(24 + len(data), 3, 0, 24, mask, fd, 42) + data


FAN_MASKS = st.sampled_from(
    [
        fwire.FAN_ACCESS,
        fwire.FAN_MODIFY | fwire.FAN_CLOSE_WRITE,
        fwire.FAN_CREATE,
        fwire.FAN_DELETE | fwire.FAN_ONDIR,
        fwire.FAN_CREATE | fwire.FAN_DELETE,
        fwire.FAN_RENAME,
        fwire.FAN_Q_OVERFLOW,
    ]
)
FAN_RECORDS = st.one_of(
    st.builds(info, st.just(fwire.INFO_DFID_NAME), st.builds(fid_key, st.integers(2, 9)), NAMES),
    st.builds(
        info, st.just(fwire.INFO_OLD_DFID_NAME), st.builds(fid_key, st.integers(2, 9)), NAMES
    ),
    st.builds(
        info, st.just(fwire.INFO_NEW_DFID_NAME), st.builds(fid_key, st.integers(2, 9)), NAMES
    ),
    st.builds(info, st.just(fwire.INFO_FID), st.builds(fid_key, st.integers(2, 9))),
    st.builds(info, st.just(fwire.INFO_DFID), st.builds(fid_key, st.integers(2, 9))),
    st.just(struct.pack("=BBHi", 4, 0, 8, 17)),  # a pidfd record nobody reads
)
FAN_BUFFERS = st.lists(
    st.builds(
        lambda mask, recs: fan_event(mask, *recs), FAN_MASKS, st.lists(FAN_RECORDS, max_size=3)
    ),
    min_size=1,
    max_size=8,
).map(b"".join)


def check_fanotify(buf: bytes) -> fwire.Parsed:
    with watchdog():
        parsed = fwire.parse_events(buf)
    assert parsed.damaged >= 0 and isinstance(parsed.truncated, bool)
    for ev in parsed.events:
        for key in (ev.dir, ev.new_dir, ev.object):
            if key is not None:
                fsid, _, handle = fwire.split_fid(key)
                assert len(fsid) == 8 and len(key) == 16 + len(handle)
        for name in (ev.name, ev.new_name):
            assert name is None or b"\0" not in name
    return parsed


@settings(FUZZ, max_examples=800)
@given(FAN_BUFFERS, mutations())
@example(fan_event(fwire.FAN_ACCESS), [("word", 0, 0)])  # event_len 0
@example(fan_event(fwire.FAN_ACCESS, info(fwire.INFO_FID, fid_key(2))), [("word", 36, 2**32 - 1)])
@example(fan_event(fwire.FAN_ACCESS, info(fwire.INFO_FID, fid_key(2))), [("word", 24, 0)])
def test_fanotify_parser_on_corrupted_buffers(
    buf: bytes, edits: list[tuple[str, int, int]]
) -> None:
    """Contract: :func:`_fanotify_wire.parse_events` never raises: a bad info record is counted
    in ``damaged`` (its event kept), a bad event header ends the parse with ``truncated``; fid
    keys always hold the whole handle they announce and names have no NUL."""
    check_fanotify(mutate(buf, edits))


class ResolvingFanotify(FanotifySource):
    """Every directory handle resolves to ``/scope/d``, inside the scope (no kernel marks)."""

    def _resolve(self, key: bytes) -> tuple[str, bool] | None:
        return "/scope/d", True


class OnlyOwnFds:
    """``os`` for the fanotify module under test: fd numbers that corrupted records carry
    are not ours to close, so closing any is refused as the kernel does for one not open."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def close(self, fd: int) -> None:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


async def fanotify_round(corrupted: bytes) -> tuple[FanotifySource, FakeChecker, list[str | None]]:
    """Drive the fanotify source's reader: ``corrupted``, then one good hint."""
    overflows: list[str | None] = []
    sink = recording_sink(overflows)
    checker = FakeChecker()
    sink.attach(checker)
    source = ResolvingFanotify(sink)
    source.add_scope("/scope")
    good = fan_event(fwire.FAN_CLOSE_WRITE, info(fwire.INFO_DFID_NAME, fid_key(1), b"good"))
    writer, reader = seqpacket()
    with writer, reader, mock.patch.object(fanotify_module, "os", OnlyOwnFds()):
        async with anyio.create_task_group() as tg:
            tg.start_soon(source._read, reader.fileno())
            with anyio.fail_after(WATCHDOG):
                if corrupted:
                    writer.send(corrupted)
                writer.send(good)
                while "/scope/d/good" not in checker.checked:  # noqa: ASYNC110 - no event to wait on
                    await anyio.sleep(0.001)
            tg.cancel_scope.cancel()
    return source, checker, overflows


@settings(FUZZ, max_examples=100)
@given(FAN_BUFFERS, mutations())
@example(fan_event(fwire.FAN_ACCESS, fd=2**31 - 1), [("flip", 0, 0)])
@example(fan_event(fwire.FAN_ACCESS), [("word", 0, 1)])
def test_fanotify_source_on_corrupted_reads(buf: bytes, edits: list[tuple[str, int, int]]) -> None:
    """Contract at the source: a truncated read is a counted error and ``sink.lost(None)``
    (OVERFLOW to every task and a rescan), damaged records a counted error; an fd number
    that is not open is a counted error; no exception leaves the reader, and the next read
    is handled."""
    corrupted = mutate(buf, edits)[: 1 << 16]
    parsed = check_fanotify(corrupted)
    source, checker, overflows = anyio.run(fanotify_round, corrupted)
    status = source.status()
    if parsed.truncated:
        assert None in overflows and None in checker.rescans
    if parsed.truncated or parsed.damaged:
        assert status.errors >= 1
    assert overflows == [None] * status.overflows


def test_a_fanotify_fd_that_is_not_open_is_an_error_not_a_crash() -> None:
    # Regression: os.close(EBADF) escaped from handle() and ended the source.
    overflows: list[str | None] = []
    source = FanotifySource(recording_sink(overflows))
    (event,) = fwire.parse_events(fan_event(fwire.FAN_ACCESS, fd=2**31 - 1)).events
    source.handle([event])
    assert source.status().errors == 1 and "2147483647" in (source.status().last_error or "")
