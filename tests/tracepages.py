"""Ring-buffer pages built by hand, in this kernel's layout (formats read from tracefs)."""

from __future__ import annotations

import struct
from pathlib import Path

from aioduet.sources import _tracefs as tf
from aioduet.sources.tracepoints import ADD, DELETE, EVENTS

ROOT = tf.mount_tracefs()
HEADER = tf.parse_header_page(Path(ROOT, "events/header_page").read_text())
ADD_FMT = tf.parse_format(ADD, Path(ROOT, "events", ADD, "format").read_text())
DEL_FMT = tf.parse_format(DELETE, Path(ROOT, "events", DELETE, "format").read_text())
FIELDS = EVENTS[ADD]


def parser() -> tf.PageParser:
    return tf.PageParser(
        HEADER, {ADD_FMT.id: ADD_FMT.struct(FIELDS), DEL_FMT.id: DEL_FMT.struct(FIELDS)}
    )


def event_data(fmt: tf.EventFormat, ino: int, index: int, dev: int, order: int) -> bytes:
    """The record data of a filemap event, laid out from its format file."""
    size = max(f.offset + f.size for f in fmt.fields.values())
    data = bytearray(size + (-size % 4))
    f = fmt.fields
    struct.pack_into("<H", data, f["common_type"].offset, fmt.id)
    struct.pack_into("<Q", data, f["i_ino"].offset, ino)
    struct.pack_into("<Q", data, f["index"].offset, index)
    struct.pack_into("<I", data, f["s_dev"].offset, dev)
    struct.pack_into("<B", data, f["order"].offset, order)
    return bytes(data)


def record(data: bytes, *, long: bool = False, delta: int = 1) -> bytes:
    if long or len(data) > 112:
        return struct.pack("<II", delta << 5, len(data) + 4) + data
    return struct.pack("<I", (delta << 5) | (len(data) // 4)) + data


def page(
    body: bytes,
    *,
    missed: int | None = None,
    flags: int = 0,
    size: int = 4096,
    stamp: int = 123456789,
) -> bytes:
    """A whole ``trace_pipe_raw`` page: header (time stamp ``stamp``), ``body``, lost count."""
    commit = len(body) | flags
    tail = b""
    if missed is not None:
        commit |= 1 << 31
        if missed:
            commit |= 1 << 30
            tail = struct.pack("<Q", missed)
    head = bytearray(HEADER.data_offset)
    struct.pack_into("<Q", head, 0, stamp)
    head[HEADER.commit_offset : HEADER.commit_offset + HEADER.commit_size] = commit.to_bytes(
        HEADER.commit_size, "little"
    )
    page = bytes(head) + body + tail
    return page + bytes(size - len(page))


def time_record(value: int, *, absolute: bool = False) -> bytes:
    """A time extend (a delta of ``value`` ns) or an absolute time stamp record."""
    return struct.pack(
        "<II", ((value & ((1 << 27) - 1)) << 5) | (31 if absolute else 30), value >> 27
    )


def add(ino: int, index: int, dev: int = 5, order: int = 0) -> bytes:
    return event_data(ADD_FMT, ino, index, dev, order)


def delete(ino: int, index: int, dev: int = 5, order: int = 0) -> bytes:
    return event_data(DEL_FMT, ino, index, dev, order)
