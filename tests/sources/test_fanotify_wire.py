"""The fanotify parser on buffers built by hand: events, info records, damage."""

from __future__ import annotations

import struct

from aioduet.sources import _fanotify_wire as wire

FSID = bytes(range(1, 9))
NOFD = -1


def fid_key(ino: int, gen: int = 7, fsid: bytes = FSID) -> bytes:
    """fsid + struct file_handle of an ext4-like handle (type 1: u32 ino, u32 gen)."""
    handle = struct.pack("=II", ino, gen)
    return fsid + struct.pack("=Ii", len(handle), 1) + handle


def record(kind: int, key: bytes, name: bytes | None = None, *, pad: bool = True) -> bytes:
    body = key if name is None else key + name + b"\0"
    if pad:
        body += b"\0" * (-(4 + len(body)) % 4)
    return struct.pack("=BBH", kind, 0, 4 + len(body)) + body


def event(mask: int, *records: bytes, pid: int = 42, fd: int = NOFD, version: int = 3) -> bytes:
    info = b"".join(records)
    return wire.METADATA.pack(24 + len(info), version, 0, 24, mask, fd, pid) + info


def test_several_events_in_one_buffer() -> None:
    parent, child = fid_key(2), fid_key(12)
    buf = (
        event(
            wire.FAN_CREATE | wire.FAN_MODIFY,
            record(wire.INFO_DFID_NAME, parent, b"f"),
            record(wire.INFO_FID, child),
        )
        + event(wire.FAN_ACCESS, record(wire.INFO_DFID_NAME, parent, b"longer-name.txt"))
        + event(wire.FAN_ACCESS | wire.FAN_ONDIR, record(wire.INFO_DFID_NAME, parent, b"."))
    )
    parsed = wire.parse_events(buf)
    assert (parsed.damaged, parsed.truncated) == (0, False)
    first, second, third = parsed.events
    assert first == wire.Event(
        wire.FAN_CREATE | wire.FAN_MODIFY, 42, NOFD, parent, b"f", None, None, child
    )
    assert (second.dir, second.name, second.object) == (parent, b"longer-name.txt", None)
    assert (third.mask & wire.FAN_ONDIR, third.name) == (wire.FAN_ONDIR, b".")


def test_split_fid_gives_what_open_by_handle_at_needs() -> None:
    key = fid_key(1234, 99)
    assert wire.split_fid(key) == (FSID, 1, struct.pack("=II", 1234, 99))


def test_rename_has_old_and_new_directory_records() -> None:
    old_dir, new_dir, child = fid_key(2), fid_key(3), fid_key(12)
    buf = event(
        wire.FAN_RENAME | wire.FAN_ONDIR,
        record(wire.INFO_OLD_DFID_NAME, old_dir, b"a"),
        record(wire.INFO_NEW_DFID_NAME, new_dir, b"b"),
        record(wire.INFO_FID, child),
    )
    (ev,) = wire.parse_events(buf).events
    assert (ev.dir, ev.name, ev.new_dir, ev.new_name, ev.object) == (
        old_dir,
        b"a",
        new_dir,
        b"b",
        child,
    )


def test_overflow_event_has_no_records() -> None:
    parsed = wire.parse_events(event(wire.FAN_Q_OVERFLOW, pid=0))
    (ev,) = parsed.events
    assert ev.mask == wire.FAN_Q_OVERFLOW and ev.dir is None and ev.name is None
    assert (parsed.damaged, parsed.truncated) == (0, False)


def test_unknown_records_are_skipped_and_a_directory_fid_has_no_name() -> None:
    pidfd = struct.pack("=BBHi", 4, 0, 8, 17)  # FAN_EVENT_INFO_TYPE_PIDFD
    future = struct.pack("=BBH", 99, 0, 12) + b"\xff" * 8
    buf = event(wire.FAN_DELETE_SELF, pidfd, future, record(wire.INFO_DFID, fid_key(5)))
    parsed = wire.parse_events(buf)
    (ev,) = parsed.events
    assert (ev.dir, ev.name, parsed.damaged) == (fid_key(5), None, 0)


def test_malformed_records_are_counted_and_their_events_kept() -> None:
    key = fid_key(2)
    too_short = struct.pack("=BBH", wire.INFO_FID, 0, 8) + b"\0" * 4  # no room for a handle
    big_handle = bytearray(record(wire.INFO_FID, key))
    struct.pack_into("=I", big_handle, 4 + 8, 200)  # handle_bytes past the record
    no_nul = record(wire.INFO_DFID_NAME, key, b"abc", pad=False)[:-1]
    no_nul = struct.pack("=BBH", wire.INFO_DFID_NAME, 0, len(no_nul)) + no_nul[4:]
    buf = (
        event(wire.FAN_ACCESS, too_short, record(wire.INFO_DFID_NAME, key, b"kept"))
        + event(wire.FAN_ACCESS, bytes(big_handle))
        + event(wire.FAN_ACCESS, no_nul)
        + event(wire.FAN_ACCESS, b"\x01\x00")  # half an info header
        + event(wire.FAN_ACCESS, struct.pack("=BBH", 1, 0, 2))  # a length below the header
        + event(wire.FAN_MODIFY, record(wire.INFO_DFID_NAME, key, b"last"))
    )
    parsed = wire.parse_events(buf)
    assert parsed.damaged == 5 and not parsed.truncated
    assert [ev.name for ev in parsed.events] == [b"kept", None, None, None, None, b"last"]
    assert parsed.events[0].dir == key


def test_a_truncated_buffer_keeps_the_whole_events_before_it() -> None:
    whole = event(wire.FAN_ACCESS, record(wire.INFO_DFID_NAME, fid_key(2), b"f"))
    for cut in (1, 10, 24, len(whole) - 1):
        parsed = wire.parse_events(whole + whole[:cut])
        assert len(parsed.events) == 1 and parsed.truncated
    bad_version = event(wire.FAN_ACCESS, version=2)
    parsed = wire.parse_events(whole + bad_version + whole)
    assert len(parsed.events) == 1 and parsed.truncated
    short_len = bytearray(whole)
    struct.pack_into("=I", short_len, 0, 10)  # event_len below metadata_len
    assert wire.parse_events(bytes(short_len)) == wire.Parsed([], 0, True)
    assert wire.parse_events(b"") == wire.Parsed([], 0, False)


def test_masks_ask_for_what_the_source_needs() -> None:
    assert wire.PATH_MASK & wire.FAN_RENAME and wire.PATH_MASK & wire.FAN_ONDIR
    assert not wire.PATH_MASK & wire.HINT_MASK
    assert wire.HINT_MASK == wire.FAN_ACCESS | wire.FAN_MODIFY | wire.FAN_CLOSE_WRITE
