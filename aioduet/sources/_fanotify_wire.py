"""The fanotify wire: event masks, info record types and the parser of ``read(2)`` buffers.

Kernel interface (``include/uapi/linux/fanotify.h``): a read returns whole events, each::

    struct fanotify_event_metadata {      /* 24 bytes, FANOTIFY_METADATA_VERSION 3 */
        u32 event_len; u8 vers; u8 reserved; u16 metadata_len;
        u64 mask; s32 fd; s32 pid;
    };

followed, in a group reporting file handles (``FAN_REPORT_FID``, ``FAN_REPORT_DFID_NAME``,
``FAN_REPORT_TARGET_FID``), by ``event_len - metadata_len`` bytes of info records::

    struct fanotify_event_info_header { u8 info_type; u8 pad; u16 len; };
    struct fanotify_event_info_fid {
        struct fanotify_event_info_header hdr;
        __kernel_fsid_t fsid;                       /* 8 bytes */
        struct file_handle { u32 handle_bytes; s32 handle_type; u8 f_handle[]; };
        /* *_DFID_NAME records only: a NUL-terminated name, then padding to 4 bytes */
    };

A file handle is kept as one ``bytes`` *fid key*: fsid, handle header and handle, which is
what identifies an inode (the kernel's handles carry the generation) and so serves as a
cache key; :func:`split_fid` takes it apart for ``open_by_handle_at(2)``.

Pure: nothing here calls the kernel, so the parser is tested on buffers built by hand.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "FAN_ACCESS",
    "FAN_CLOSE_WRITE",
    "FAN_CREATE",
    "FAN_DELETE",
    "FAN_DELETE_SELF",
    "FAN_MODIFY",
    "FAN_MOVED_FROM",
    "FAN_MOVED_TO",
    "FAN_MOVE_SELF",
    "FAN_ONDIR",
    "FAN_Q_OVERFLOW",
    "FAN_RENAME",
    "HINT_MASK",
    "INFO_DFID",
    "INFO_DFID_NAME",
    "INFO_FID",
    "INFO_NEW_DFID_NAME",
    "INFO_OLD_DFID_NAME",
    "METADATA",
    "METADATA_VERSION",
    "PATH_MASK",
    "Event",
    "Parsed",
    "parse_events",
    "split_fid",
]

# Event bits (u64 mask).
FAN_ACCESS = 0x0000_0001
FAN_MODIFY = 0x0000_0002
FAN_ATTRIB = 0x0000_0004
FAN_CLOSE_WRITE = 0x0000_0008
FAN_MOVED_FROM = 0x0000_0040
FAN_MOVED_TO = 0x0000_0080
FAN_CREATE = 0x0000_0100
FAN_DELETE = 0x0000_0200
FAN_DELETE_SELF = 0x0000_0400
FAN_MOVE_SELF = 0x0000_0800
FAN_Q_OVERFLOW = 0x0000_4000
FAN_RENAME = 0x1000_0000  # Linux >= 5.17, needs FAN_REPORT_DFID_NAME
FAN_ONDIR = 0x4000_0000

HINT_MASK = FAN_ACCESS | FAN_MODIFY | FAN_CLOSE_WRITE
"""Events on a file that only ask for a residency check of it."""
PATH_MASK = FAN_CREATE | FAN_DELETE | FAN_RENAME | FAN_ONDIR
"""Events that change paths (FAN_ONDIR: of directories too)."""

# Info record types.
INFO_FID = 1
INFO_DFID_NAME = 2
INFO_DFID = 3
INFO_OLD_DFID_NAME = 10
INFO_NEW_DFID_NAME = 12

METADATA = struct.Struct("=IBBHQii")
METADATA_VERSION = 3
_INFO_HEADER = struct.Struct("=BBH")
_HANDLE_HEADER = struct.Struct("=Ii")
_FSID = 8
_FID_FIXED = _FSID + _HANDLE_HEADER.size
_HANDLE_SIZE = struct.Struct("=I")


class Event(NamedTuple):
    """One event with the handles and names of its info records (None where absent)."""

    mask: int
    """``FAN_*`` bits."""
    pid: int
    """The process that caused it (a thread id with ``FAN_REPORT_TID``)."""
    fd: int
    """``FAN_NOFD`` (-1) in a group that reports handles; the reader closes any other."""
    dir: bytes | None = None
    """Fid key of the directory the event happened in (DFID_NAME, DFID, OLD_DFID_NAME)."""
    name: bytes | None = None
    """The entry's name in ``dir`` (``b"."``: the directory itself)."""
    new_dir: bytes | None = None
    """FAN_RENAME: fid key of the directory moved to (NEW_DFID_NAME)."""
    new_name: bytes | None = None
    """FAN_RENAME: the new name in ``new_dir``."""
    object: bytes | None = None
    """Fid key of the object itself (FID record; the child for ``FAN_REPORT_TARGET_FID``)."""


class Parsed(NamedTuple):
    """What :func:`parse_events` made of a buffer."""

    events: list[Event]
    """The events, in order."""
    damaged: int
    """Info records skipped because they were malformed (their events are kept)."""
    truncated: bool
    """The buffer ended inside an event or held an unreadable header: the rest was dropped."""


def split_fid(key: bytes) -> tuple[bytes, int, bytes]:
    """``(fsid, handle_type, handle)`` of a fid key, for ``open_by_handle_at(2)``."""
    size, handle_type = _HANDLE_HEADER.unpack_from(key, _FSID)
    start = _FSID + _HANDLE_HEADER.size
    return key[:_FSID], handle_type, key[start : start + size]


def parse_events(buf: bytes) -> Parsed:
    """Split a ``read(2)`` buffer of a fanotify fd into events.

    Unknown info record types (pidfd, error, range...) are skipped; malformed records are
    skipped and counted; an event header that cannot be read ends the parse.
    """
    # One loop with locals, not helpers: this runs once per event of the whole filesystem.
    events: list[Event] = []
    append = events.append
    damaged = 0
    unpack = METADATA.unpack_from
    info = _INFO_HEADER.unpack_from
    handle_size = _HANDLE_SIZE.unpack_from
    end = len(buf)
    pos = 0
    while pos < end:
        if end - pos < METADATA.size:
            return Parsed(events, damaged, True)
        length, version, _, meta_len, mask, fd, pid = unpack(buf, pos)
        if (
            version != METADATA_VERSION
            or meta_len < METADATA.size
            or length < meta_len
            or pos + length > end
        ):
            return Parsed(events, damaged, True)
        stop = pos + length
        rec = pos + meta_len
        keys: list[bytes | None] = [None, None, None, None]  # see _SLOTS
        names: list[bytes | None] = [None, None]  # name, new_name
        while rec < stop:
            if stop - rec < _INFO_HEADER.size:
                damaged += 1
                break
            kind, _, rec_len = info(buf, rec)
            rec_end = rec + rec_len
            if rec_len < _INFO_HEADER.size or rec_end > stop:
                damaged += 1
                break
            slot = _SLOTS.get(kind)
            if slot is not None:
                # fsid (8) + struct file_handle (8 + handle_bytes) [+ name NUL padding]
                head = rec + _INFO_HEADER.size
                key_end = head + _FID_FIXED
                if key_end <= rec_end:
                    key_end += handle_size(buf, head + _FSID)[0]
                nul = -1
                if key_end <= rec_end:
                    nul = buf.find(0, key_end, rec_end) if slot < 2 else key_end
                if nul < 0:
                    damaged += 1
                else:
                    keys[slot] = buf[head:key_end]
                    if slot < 2:
                        names[slot] = buf[key_end:nul]
            rec = rec_end
        append(Event(mask, pid, fd, keys[0] or keys[3], names[0], keys[1], names[1], keys[2]))
        pos = stop
    return Parsed(events, damaged, False)


# info type -> slot: 0 directory and name, 1 new directory and name (slots below 2 have a
# name), 2 the object itself, 3 a directory without a name.
_SLOTS: dict[int, int] = {
    INFO_DFID_NAME: 0,
    INFO_OLD_DFID_NAME: 0,
    INFO_NEW_DFID_NAME: 1,
    INFO_FID: 2,
    INFO_DFID: 3,
}
