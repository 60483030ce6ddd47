"""The inotify wire: syscalls, the event parser, the watch table and the tree walk.

Kernel interface: ``inotify_init1(2)``, ``inotify_add_watch(2)``, ``inotify_rm_watch(2)``
(Linux >= 2.6.27 for ``init1``) and the records that ``read(2)`` returns::

    struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[len]; }

``name`` is NUL-padded; the kernel rounds ``len`` up to a multiple of 16 and never splits a
record across reads (a buffer too small for the next record gives ``EINVAL``).

Why not pyinotify here: its ``Notifier`` manages ~80k events/s (REFERENCE.md section 4) and
its ``INotifyWrapper`` (0.9.6) calls ``inotify_init()`` without flags (so close-on-exec could
only be set afterwards, racing with a fork in another thread) and encodes paths strictly
(a directory whose name is not valid UTF-8 raises ``UnicodeEncodeError``); importing it
also imports the deprecated ``asyncore``. So the three calls are bound with ctypes in
:mod:`aioduet._kernel`, and the ``IN_*`` values are the kernel ABI
(``include/uapi/linux/inotify.h``), cross-checked against pyinotify's table by the tests.

Everything but :func:`watch_tree` is meant for the event loop; :func:`watch_tree` blocks
(one syscall per directory) and runs in a worker thread.
"""

from __future__ import annotations

import errno
import os
import struct
import threading

import attrs

from .. import _kernel
from .._paths import Exclusions, is_under
from ..errors import AioduetError

__all__ = [
    "HEADER_SIZE",
    "HINT_MASK",
    "PATH_MASK",
    "WATCH_MASK",
    "InotifyWireError",
    "RawEvent",
    "Setup",
    "WatchTable",
    "add_watch",
    "decode_hint",
    "inotify_init1",
    "parse_events",
    "rm_watch",
    "split_events",
    "watch_tree",
]

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

HINT_MASK = IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CREATE
"""Events on a file that only ask for a residency check of it."""
WATCH_MASK = (
    HINT_MASK
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_MOVE_SELF
    | IN_DONT_FOLLOW
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
"""What every directory watch asks for: never through a symlink, only directories, and no
events for children that are already unlinked."""
PATH_MASK = WATCH_MASK & ~(IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE)
"""Only what changes paths (creations, deletions, moves): beside an exact source, which
reports page changes itself, reads and writes must not cost an event each."""
_NOT_HINT = 0xFFFFFFFF & ~HINT_MASK
_MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"

_HEADER = struct.Struct("iIII")
HEADER_SIZE = _HEADER.size

RawEvent = tuple[int, int, int, str]
"""``(wd, mask, cookie, name)``; ``name`` is ``""`` for events on the watched directory itself
and is decoded with ``surrogateescape``, as :func:`os.fsdecode` does."""


class InotifyWireError(AioduetError, ValueError):
    """Bytes read from an inotify fd are not a whole number of ``inotify_event`` records."""


# -- syscalls (bound in aioduet._kernel, the one ctypes module) ----------------------------


def inotify_init1(flags: int = IN_NONBLOCK | IN_CLOEXEC) -> int:
    """A new inotify fd (non-blocking and close-on-exec by default).

    Raises:
        OSError: ``EMFILE`` when ``/proc/sys/fs/inotify/max_user_instances`` is reached.
    """
    return _kernel.inotify_init1(flags)


def add_watch(fd: int, path: str, mask: int = WATCH_MASK) -> int:
    """Watch the directory ``path``; returns its watch descriptor (the same for the same inode).

    Raises:
        OSError: ``ENOENT``/``ENOTDIR`` (gone, or not a directory), ``EACCES``, and ``ENOSPC``
            with a message naming ``/proc/sys/fs/inotify/max_user_watches``.
    """
    try:
        return _kernel.inotify_add_watch(fd, os.fsencode(path), mask)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(
                exc.errno,
                f"inotify watch limit reached: raise {_MAX_USER_WATCHES}"
                " (or exclude directories) to watch more",
                path,
            ) from None
        raise OSError(exc.errno, exc.strerror, path) from None


def rm_watch(fd: int, wd: int) -> bool:
    """Stop a watch; False if the kernel had already dropped it (``EINVAL``)."""
    return _kernel.inotify_rm_watch(fd, wd)


# -- parsing -----------------------------------------------------------------------------


def _truncated(buf: bytes, off: int) -> InotifyWireError:
    return InotifyWireError(
        f"truncated inotify record at byte {off} of {len(buf)}: not an inotify_event stream"
    )


def _name(raw: bytes) -> str:
    # A C string: it ends at the first NUL (the kernel pads with NULs after it). A NUL kept
    # inside a name would make a path that os.open and os.stat refuse with ValueError.
    return raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def parse_events(buf: bytes) -> list[RawEvent]:
    """Every record in ``buf`` as ``(wd, mask, cookie, name)``.

    Raises:
        InotifyWireError: ``buf`` ends inside a record.
    """
    unpack = _HEADER.unpack_from
    out: list[RawEvent] = []
    append = out.append
    off = 0
    end = len(buf)
    while off < end:
        if end - off < HEADER_SIZE:
            raise _truncated(buf, off)
        wd, mask, cookie, length = unpack(buf, off)
        start = off + HEADER_SIZE
        off = start + length
        if off > end:
            raise _truncated(buf, start - HEADER_SIZE)
        append((wd, mask, cookie, _name(buf[start:off]) if length else ""))
    return out


def split_events(buf: bytes, hints: set[tuple[int, bytes]], others: list[RawEvent]) -> int:
    """Parse ``buf`` for the reader: the hot path of the inotify source.

    Plain file hints (only :data:`HINT_MASK` bits, with a name) are added to ``hints`` as
    ``(wd, raw padded name)``, so repeats cost one set insertion and names are decoded once
    per batch (:func:`decode_hint`); every other record is appended to ``others`` in order.
    Returns the number of records.

    Raises:
        InotifyWireError: ``buf`` ends inside a record (records before it are delivered).
    """
    unpack = _HEADER.unpack_from
    add = hints.add
    append = others.append
    off = 0
    end = len(buf)
    count = 0
    while off < end:
        if end - off < HEADER_SIZE:
            raise _truncated(buf, off)
        wd, mask, cookie, length = unpack(buf, off)
        start = off + HEADER_SIZE
        off = start + length
        if off > end:
            raise _truncated(buf, start - HEADER_SIZE)
        if mask & _NOT_HINT or not length:
            append((wd, mask, cookie, _name(buf[start:off]) if length else ""))
        else:
            add((wd, buf[start:off]))
        count += 1
    return count


def decode_hint(raw: bytes) -> str:
    """The name in a raw hint from :func:`split_events`."""
    return _name(raw)


# -- exclusions --------------------------------------------------------------------------


# -- the watch table ---------------------------------------------------------------------


def _prefix(path: str) -> str:
    return path if path.endswith("/") else path + "/"


@attrs.define(eq=False)
class WatchTable:
    """Watch descriptors and the directories they stand for, both ways.

    ``prefixes[wd]`` is the directory's path with a trailing ``/``, ready for ``prefix + name``.
    """

    prefixes: dict[int, str] = attrs.field(factory=dict)
    wds: dict[str, int] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self.prefixes)

    def path_of(self, wd: int) -> str | None:
        """The directory of ``wd``, if known."""
        prefix = self.prefixes.get(wd)
        if prefix is None:
            return None
        return prefix if prefix == "/" else prefix[:-1]

    def bind(self, wd: int, path: str) -> None:
        """``wd`` watches ``path`` (replacing what either was bound to before)."""
        old = self.path_of(wd)
        if old is not None and old != path:
            self.wds.pop(old, None)
        other = self.wds.get(path)
        if other is not None and other != wd:
            # A new directory at a path whose old directory's watch has not ended yet.
            self.prefixes.pop(other, None)
        self.wds[path] = wd
        self.prefixes[wd] = _prefix(path)

    def unbind(self, wd: int) -> str | None:
        """Forget ``wd``; returns its directory."""
        path = self.path_of(wd)
        if path is not None:
            del self.prefixes[wd]
            if self.wds.get(path) == wd:
                del self.wds[path]
        return path

    def under(self, root: str) -> list[int]:
        """The watches of ``root`` and every directory below it."""
        return [wd for path, wd in self.wds.items() if is_under(path, root)]

    def rename(self, old: str, new: str) -> int:
        """Directory ``old`` is now ``new``: rewrite it and its descendants; returns how many."""
        moved = [(path, wd) for path, wd in self.wds.items() if is_under(path, old)]
        for path, _ in moved:
            del self.wds[path]
        for path, wd in moved:
            self.bind(wd, new + path[len(old) :])
        return len(moved)


# -- the tree walk (worker thread) --------------------------------------------------------


@attrs.define(eq=False)
class Setup:
    """What one :func:`watch_tree` call did, for the event loop to apply."""

    root: str
    watches: list[tuple[int, str]] = attrs.field(factory=list)
    """``(wd, directory)`` in the order they were added (parents first)."""
    vanished: int = 0
    """Directories that disappeared during the walk (normal, not an error)."""
    denied: list[str] = attrs.field(factory=list)
    """Directories that could not be watched or listed (``EACCES``)."""
    errors: int = 0
    last_error: str | None = None
    full: bool = False
    """The watch limit (``ENOSPC``) stopped the walk."""

    def fail(self, path: str, exc: OSError) -> None:
        self.errors += 1
        self.last_error = f"{path}: {exc.strerror or exc}"


def watch_tree(
    fd: int,
    root: str,
    excluded: Exclusions | None = None,
    stop: threading.Event | None = None,
    mask: int = WATCH_MASK,
) -> Setup:
    """Watch ``root`` and every directory below it on root's filesystem (like ``find -xdev``).

    Symlinks are never followed; directories that vanish are skipped; excluded directories
    (the root itself is never excluded) are not entered. Each
    directory is watched before it is listed, so a subdirectory created meanwhile is found
    either by the listing or by an ``IN_CREATE`` event. Stops early when ``stop`` is set.
    """
    setup = Setup(root)
    try:
        device = os.stat(root, follow_symlinks=False).st_dev
    except OSError:
        setup.vanished += 1
        return setup
    stack = [root]
    while stack:
        if stop is not None and stop.is_set():
            break
        path = stack.pop()
        try:
            wd = add_watch(fd, path, mask)
        except (FileNotFoundError, NotADirectoryError):
            setup.vanished += 1
            continue
        except PermissionError as exc:
            setup.denied.append(path)
            setup.fail(path, exc)
            continue
        except OSError as exc:
            setup.fail(path, exc)
            if exc.errno == errno.ENOSPC:
                setup.full = True
                break
            continue
        setup.watches.append((wd, path))
        _list_subdirs(setup, path, device, excluded, stack)
    return setup


def _list_subdirs(
    setup: Setup, path: str, device: int, excluded: Exclusions | None, stack: list[str]
) -> None:
    """Push the subdirectories of ``path`` to walk (same filesystem, not excluded)."""
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    if (
                        entry.is_dir(follow_symlinks=False)
                        and entry.stat(follow_symlinks=False).st_dev == device
                        and not (excluded and excluded(entry.path))
                    ):
                        stack.append(entry.path)
                except PermissionError as exc:
                    setup.denied.append(entry.path)
                    setup.fail(entry.path, exc)
                except OSError:
                    setup.vanished += 1
    except (FileNotFoundError, NotADirectoryError):
        setup.vanished += 1
    except PermissionError as exc:
        setup.denied.append(path)
        setup.fail(path, exc)
