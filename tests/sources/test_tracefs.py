"""tracefs: formats, the binary page parser (synthetic pages + fuzz) and real instances."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tracepages as tp_pages
from hypothesis import given, settings
from hypothesis import strategies as st
from tracepages import (
    ADD_FMT,
    DEL_FMT,
    FIELDS,
    HEADER,
    ROOT,
    event_data,
    page,
    parser,
    record,
    time_record,
)

from aioduet.sources import _tracefs as tf
from aioduet.sources.tracepoints import ADD, DELETE


def test_header_page_of_this_kernel() -> None:
    # 64-bit kernel: local_t commit is 8 bytes, data after the 16-byte header.
    assert tf.PageHeader(8, 8, 16) == HEADER
    assert ADD_FMT.fields["order"].size == 1
    assert ADD_FMT.struct(FIELDS).format.startswith("<H")


def test_parse_format_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="no ID"):
        tf.parse_format("x/y", "name: y\nformat:\n")
    with pytest.raises(ValueError, match="common_type"):
        tf.parse_format("x/y", "ID: 5\n\tfield:int a;\toffset:0;\tsize:4;\tsigned:1;\n")


def test_kernel_dev_encoding() -> None:
    st_dev = os.makedev(254, 3)
    assert tf.kernel_dev(st_dev) == (254 << 20) | 3
    assert tf.user_dev(tf.kernel_dev(st_dev)) == st_dev


def test_parse_records_of_every_kind() -> None:
    add = event_data(ADD_FMT, 77, 0, 5, 9)
    rm = event_data(DEL_FMT, 77, 512, 5, 0)
    other = struct.pack("<H", 0xFFFF) + bytes(10)  # an event we do not decode
    body = (
        record(add)
        + struct.pack("<II", (3 << 5) | 30, 1)  # time extend
        + record(other)
        + struct.pack("<II", (1 << 5) | 29, 12)  # padding: its length word counts itself
        + bytes(8)
        + struct.pack("<II", 31, 0)  # absolute time stamp
        + record(rm, long=True)  # type_len 0: length in the next word
    )
    out: list[tuple[object, ...]] = []
    assert parser().parse(page(body), out) == 0
    assert out == [(ADD_FMT.id, 77, 0, 5, 9), (DEL_FMT.id, 77, 512, 5, 0)]


def test_null_padding_ends_the_page() -> None:
    add = event_data(ADD_FMT, 1, 2, 3, 0)
    body = record(add) + struct.pack("<I", 29) + b"\xff" * 40
    out: list[tuple[object, ...]] = []
    assert parser().parse(page(body), out) == 0
    assert out == [(ADD_FMT.id, 1, 2, 3, 0)]


def test_lost_events_flags() -> None:
    add = record(event_data(ADD_FMT, 1, 2, 3, 0))
    out: list[tuple[object, ...]] = []
    assert parser().parse(page(add, missed=0), out) == -1
    assert parser().parse(page(add, missed=42), out) == 42
    assert len(out) == 2


def test_truncated_record_is_a_clear_error() -> None:
    add = record(event_data(ADD_FMT, 1, 2, 3, 0))
    with pytest.raises(tf.PageError, match="runs past"):
        parser().parse(page(add[:-4]), [])
    with pytest.raises(tf.PageError, match="shorter than its header"):
        parser().parse(b"\0" * 8, [])
    with pytest.raises(tf.PageError, match="claims"):
        parser().parse(page(add)[:30], [])


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=600), st.integers(0, 4080), st.booleans())
def test_fuzz_arbitrary_bytes(body: bytes, length: int, lost: bool) -> None:
    page = bytearray(tp_pages.page(body, missed=0 if lost else None))
    length = min(length, len(body) + 40)
    page[8:16] = (length | (1 << 31 if lost else 0)).to_bytes(8, "little")
    out: list[tuple[object, ...]] = []
    try:
        missed = parser().parse(bytes(page), out)
    except tf.PageError:
        return
    assert missed == (-1 if lost else 0)
    assert all(r[0] in (ADD_FMT.id, DEL_FMT.id) for r in out)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=4200))
def test_fuzz_whole_pages(page: bytes) -> None:
    with contextlib.suppress(tf.PageError):
        parser().parse(page, [])


# -- real instances ---------------------------------------------------------------------


def _instances() -> set[str]:
    return set(os.listdir(f"{ROOT}/instances"))


def test_instance_created_enabled_and_removed() -> None:
    inst = tf.Instance.create([ADD, DELETE, "nosuch/event"], buffer_kb=64)
    try:
        name = os.path.basename(inst.path)
        assert name == tf.instance_name()
        assert name in _instances()
        assert inst.missing == ("nosuch/event",)
        inst.set_filter(ADD, "s_dev == 1")
        inst.enable()
        assert Path(inst.path, "events", ADD, "enable").read_text().strip() == "1"
        assert Path(inst.path, "events", ADD, "filter").read_text().strip() == "s_dev == 1"
        assert int(Path(inst.path, "buffer_size_kb").read_text()) <= 128
        assert inst.cpus() == list(range(len(inst.cpus())))
        fd = inst.open_pipe(0)
        os.close(fd)
    finally:
        assert inst.close()
    assert inst.close()  # idempotent
    assert name not in _instances()


def test_stale_instance_of_dead_process_removed() -> None:
    child = subprocess.Popen(["true"])  # a pid that is gone once waited for
    child.wait()
    stale = f"{ROOT}/instances/{tf.PREFIX}{child.pid}-12345"
    live = f"{ROOT}/instances/{tf.instance_name(os.getppid())}"  # our parent lives on
    os.mkdir(stale)
    os.mkdir(live)
    try:
        Path(stale, "events", ADD, "enable").write_text("1")
        with tf.Instance.create([ADD], buffer_kb=8):
            assert not os.path.exists(stale)
            assert os.path.exists(live)
    finally:
        for path in (stale, live):
            tf.remove_instance(path)


def _wait_gone(name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while name in _instances():
        assert time.monotonic() < deadline, f"{name} left behind"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_instance_left_after_signal(sig: signal.Signals) -> None:
    code = textwrap.dedent(
        """
        import os, sys, anyio
        from aioduet.sources import _tracefs as tf
        from aioduet.sources.tracepoints import TracepointSource
        from aioduet.sources import Sink
        from aioduet.store import Store
        from aioduet._paths import PathIndex

        async def main():
            source = TracepointSource(Sink(Store(1), PathIndex()), buffer_kb=16)
            source.add_scope("/tmp")
            async with anyio.create_task_group() as tg:
                await tg.start(source.run)
                print(os.path.basename(source.instance.path), flush=True)
                await anyio.sleep_forever()

        anyio.run(main)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        name = proc.stdout.readline().strip()
        assert name.startswith(tf.PREFIX)
        assert name in _instances()
        proc.send_signal(sig)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close() if proc.stdout else None
    _wait_gone(name)


def test_records_carry_the_time_stamps_the_kernel_gave_them() -> None:
    add = record(event_data(ADD_FMT, 1, 2, 3, 0), delta=1)
    other = struct.pack("<I", (4 << 5) | 3) + struct.pack("<H", 0xFFFF) + bytes(10)
    body = (
        add  # 1000 + 1
        + record(event_data(ADD_FMT, 1, 3, 3, 0), delta=2)  # + 2
        + other  # an event nobody decodes still moves the time: + 4
        + time_record((3 << 27) + 5)  # a time extend
        + record(event_data(DEL_FMT, 1, 2, 3, 0), delta=1, long=True)
        + time_record(5_000_000_000, absolute=True)
        + record(event_data(ADD_FMT, 1, 4, 3, 0), delta=7)
    )
    out: list[tuple[object, ...]] = []
    stamps: list[int] = []
    assert parser().parse(page(body, stamp=1000), out, stamps) == 0
    extended = 1007 + (3 << 27) + 5
    assert stamps == [1001, 1003, extended + 1, 5_000_000_007]
    assert len(out) == 4
    plain: list[tuple[object, ...]] = []
    parser().parse(page(body, stamp=1000), plain)  # without stamps: the same records
    assert plain == out


def test_an_instance_stamps_records_with_the_monotonic_clock(tmp_path: Path) -> None:
    instance = tf.Instance.create([ADD], buffer_kb=256)
    try:
        assert instance.clock == "mono"
        before = time.monotonic_ns()
        instance.enable()
        (tmp_path / "stamped").write_bytes(os.urandom(8192))
        out: list[tuple[object, ...]] = []
        stamps: list[int] = []
        for cpu in instance.cpus():
            fd = instance.open_pipe(cpu)
            try:
                while True:
                    try:
                        raw = os.read(fd, instance.page_size)
                    except BlockingIOError:
                        break
                    if not raw:
                        break
                    instance.parser({ADD: FIELDS}).parse(raw, out, stamps)
            finally:
                os.close(fd)
        after = time.monotonic_ns()
        assert stamps
        assert all(before <= stamp <= after for stamp in stamps)
    finally:
        instance.close()


def test_an_absolute_time_stamp_sets_the_time_as_the_kernel_reads_it() -> None:
    add = record(event_data(ADD_FMT, 1, 2, 3, 0), delta=0)
    # An interrupted write makes the kernel store an absolute stamp (59 bits), which may be
    # earlier than the one before it: it is the time, not a wrap of the 59 bits.
    body = add + time_record(1_000, absolute=True) + add
    stamps: list[int] = []
    parser().parse(page(body, stamp=5_000), [], stamps)
    assert stamps == [5_000, 1_000]
    # With the top 5 bits set, they come from the stamp before; a smaller value wrapped.
    top = 1 << 60
    stamps.clear()
    parser().parse(page(body, stamp=top + 5_000), [], stamps)
    assert stamps == [top + 5_000, top + (1 << 59) + 1_000]
