"""Raw page-cache syscalls: the only module in aioduet that touches :mod:`ctypes`.

Interfaces used, and the kernels that have them:

* ``cachestat(2)`` (syscall 451, Linux >= 6.5; no libc wrapper, called through
  ``syscall(3)``): page counts -- cached, dirty, under writeback, evicted, recently
  evicted -- for a byte range of a file. Newer kernels answer ``EPERM`` for a file the
  caller could not open for writing; such a file is reported as unknown, never as cached.
* ``mmap(2)`` + ``mincore(2)`` (any Linux): one residency bit per page. Python's
  :mod:`mmap` cannot give the address of a read-only map, so both go through libc. For the
  files where cachestat says ``EPERM``, mincore pretends every page is resident: callers
  ask cachestat first.
* ``posix_fadvise(2)`` ``DONTNEED``/``WILLNEED``: evict clean pages (on dirty pages it only
  starts writeback; a no-op on tmpfs) and start readahead.
* ``ioctl(FS_IOC_GETVERSION)``: the inode generation on ext4 and btrfs.
* ``name_to_handle_at(2)`` / ``open_by_handle_at(2)``: file handles, to reopen an inode
  known by ``(ino, gen)``; opening needs CAP_DAC_READ_SEARCH.

cachestat counts whole folios: a large folio (ext4 uses folios up to order 9 since 6.16)
with one dirty byte counts every page it covers as dirty, so :func:`page_runs` is exact at
the granularity at which the kernel tracks state, which may be coarser than a page.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import os
import struct
import threading
from typing import NamedTuple, NoReturn

from .errors import ResidencyUnknown, SourceUnavailable

__all__ = [
    "AT_EMPTY_PATH",
    "AT_SYMLINK_FOLLOW",
    "MAX_HANDLE_SZ",
    "PAGE_SIZE",
    "CacheStat",
    "cachestat",
    "cachestat_supported",
    "dirty_runs",
    "evict",
    "inode_generation",
    "inotify_add_watch",
    "inotify_init1",
    "inotify_rm_watch",
    "mincore",
    "name_to_handle_at",
    "open_by_handle_at",
    "page_runs",
    "prefetch",
]

PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")

_SYS_CACHESTAT = 451  # same number in the generic and the x86-64 syscall tables
_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value
# _IOR('v', 1, long): the kernel declares a long but writes an int.
_FS_IOC_GETVERSION = (2 << 30) | (ctypes.sizeof(ctypes.c_long) << 16) | (ord("v") << 8) | 1
_NO_GENERATION = frozenset({errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})
_REFUSED = frozenset({errno.EPERM, errno.EACCES, errno.ENODEV})
_BIT0 = bytes(b & 1 for b in range(256))  # mincore defines bit 0 only


def _load_libc() -> ctypes.CDLL:
    # Trying the usual name first saves find_library's ~15 ms at import (the CLI starts fast).
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


_libc = _load_libc()
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_mincore = _libc.mincore
_mincore.restype = ctypes.c_int
_mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


class _Range(ctypes.Structure):
    _fields_ = (("off", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _Stat(ctypes.Structure):
    _fields_ = tuple((name, ctypes.c_uint64) for name in ("cache", "dirty", "wb", "ev", "rev"))


class CacheStat(NamedTuple):
    """Page counts of a range of a file, as ``cachestat(2)`` reports them.

    A named tuple rather than an attrs class: it is made once per call, on the hot path
    of every scan.
    """

    cache: int
    """Pages of the range in the page cache (``nr_cache``)."""
    dirty: int
    """Cached pages that are dirty (``nr_dirty``)."""
    writeback: int
    """Cached pages under writeback (``nr_writeback``)."""
    evicted: int
    """Pages evicted by reclaim that left a shadow entry (``nr_evicted``)."""
    recently_evicted: int
    """Evicted pages that would still be resident with the memory since freed."""


class _Buffers(threading.local):
    """Each thread's cachestat arguments, allocated once (half the cost of a call)."""

    def __init__(self) -> None:
        self.range = _Range()
        self.stat = _Stat()
        self.range_p = ctypes.addressof(self.range)
        self.stat_p = ctypes.addressof(self.stat)


_buffers = _Buffers()


def _raise_for(err: int, what: str) -> NoReturn:
    """Raise the exception that ``err`` from the ``what`` syscall stands for."""
    if err == errno.ENOSYS:
        raise SourceUnavailable(
            err,
            f"{what} is unavailable: the kernel is older than 6.5 "
            f"(or a seccomp filter blocks syscall {_SYS_CACHESTAT})",
        )
    if err in _REFUSED:
        raise ResidencyUnknown(
            err, f"{what} refused ({os.strerror(err)}): cannot tell which pages are cached"
        )
    raise OSError(err, os.strerror(err))


def cachestat(fd: int, offset: int = 0, length: int = 0) -> CacheStat:
    """Count the pages of a byte range of a file that are cached, dirty, and so on.

    Args:
        fd: An open file descriptor.
        offset: First byte of the range.
        length: Length of the range in bytes; 0 means up to the end of the file.

    Returns:
        Counts for the pages covering ``[offset, offset + length)``.

    Raises:
        ValueError: ``offset`` or ``length`` is negative.
        SourceUnavailable: The kernel has no cachestat (older than 6.5).
        ResidencyUnknown: The kernel refused (``EPERM``: the caller could not write the file).
        OSError: Any other error, for example ``EBADF``.
    """
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must be >= 0, got {offset} and {length}")
    buffers = _buffers
    rng, st = buffers.range, buffers.stat
    rng.off, rng.len = offset, length
    if _syscall(_SYS_CACHESTAT, fd, buffers.range_p, buffers.stat_p, 0) != 0:
        _raise_for(ctypes.get_errno(), "cachestat")
    return CacheStat(st.cache, st.dirty, st.wb, st.ev, st.rev)


@functools.cache
def cachestat_supported() -> bool:
    """Tell whether ``cachestat(2)`` works here (probed once, on a file of our own)."""
    import tempfile  # noqa: PLC0415 - only this check needs it; the CLI starts faster

    with tempfile.TemporaryFile() as f:
        try:
            cachestat(f.fileno())
        except OSError:  # ENOSYS, or EPERM from a seccomp filter
            return False
    return True


def mincore(fd: int, size: int, offset: int = 0) -> bytes:
    """Map which pages of ``size`` bytes of a file from ``offset`` on are in the page cache.

    Args:
        fd: A file descriptor open for reading.
        size: Number of bytes to cover; clipped to the file's size.
        offset: Where to start, a multiple of :data:`PAGE_SIZE` (a window of a large file).

    Returns:
        One byte per page, ``b"\\x00"`` (not cached) or ``b"\\x01"`` (cached).

    Raises:
        ValueError: ``size`` is negative.
        ResidencyUnknown: The file cannot be mapped (``ENODEV``, ``EACCES``...).
        OSError: Any other error.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if offset < 0 or offset % PAGE_SIZE:
        raise ValueError(f"offset must be a non-negative multiple of {PAGE_SIZE}, got {offset}")
    size = min(size, os.fstat(fd).st_size - offset)
    if size <= 0:
        return b""
    addr = _mmap(None, size, _PROT_READ, _MAP_SHARED, fd, offset)
    if addr is None or addr == _MAP_FAILED:
        _raise_for(ctypes.get_errno(), "mmap")
    try:
        vec = ctypes.create_string_buffer(-(-size // PAGE_SIZE))
        if _mincore(addr, size, vec) != 0:
            _raise_for(ctypes.get_errno(), "mincore")
        return vec.raw.translate(_BIT0)
    finally:
        _munmap(addr, size)


def page_runs(
    fd: int, size: int, field: str = "dirty", total: int | None = None, first_page: int = 0
) -> list[tuple[int, int]]:
    """Find the runs of pages that a :class:`CacheStat` field counts, by bisection.

    A range whose count is 0 is skipped, one whose count equals its length is taken whole,
    any other is split in two: O(runs * log(pages)) cachestat calls.

    Args:
        fd: An open file descriptor.
        size: Number of bytes of the file to cover.
        field: The :class:`CacheStat` field: ``"dirty"``, ``"writeback"``, ``"cache"``...
        total: The count of ``field`` over the whole range, if known (saves one call).
        first_page: Where the range starts; ``size`` bytes are covered from there on.

    Returns:
        Sorted, merged ``(first_page, count)`` runs.

    Raises:
        ValueError: ``field`` is not a :class:`CacheStat` field, or ``size`` is negative.
        SourceUnavailable, ResidencyUnknown, OSError: As :func:`cachestat`.
    """
    if field not in CacheStat._fields:
        raise ValueError(f"unknown CacheStat field {field!r}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    runs: list[tuple[int, int]] = []
    pages = -(-size // PAGE_SIZE)
    stack = [(first_page, pages, total)]
    while stack:
        first, count, n = stack.pop()
        if n is None:
            n = getattr(cachestat(fd, first * PAGE_SIZE, count * PAGE_SIZE), field)
        if n == 0 or count == 0:
            continue
        if n >= count or count == 1:
            if runs and runs[-1][0] + runs[-1][1] == first:
                runs[-1] = (runs[-1][0], runs[-1][1] + count)
            else:
                runs.append((first, count))
            continue
        half = count // 2
        stack += ((first + half, count - half, None), (first, half, None))  # low half first
    return runs


def dirty_runs(fd: int, size: int, total_dirty: int | None = None) -> list[tuple[int, int]]:
    """Find the runs of dirty pages: :func:`page_runs` for ``"dirty"``."""
    return page_runs(fd, size, "dirty", total_dirty)


def evict(fd: int, offset: int = 0, length: int = 0) -> None:
    """Drop the clean cached pages of a range (``POSIX_FADV_DONTNEED``; 0 = to the end)."""
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def prefetch(fd: int, offset: int = 0, length: int = 0) -> None:
    """Start reading a range into the cache (``POSIX_FADV_WILLNEED``; 0 = to the end)."""
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)


def inode_generation(fd: int) -> int:
    """Return the inode generation number (``FS_IOC_GETVERSION``), 0 where there is none.

    Raises:
        OSError: Errors other than "not supported by this filesystem" (``EBADF``...).
    """
    try:
        buf = fcntl.ioctl(fd, _FS_IOC_GETVERSION, bytes(8))
    except OSError as exc:
        if exc.errno in _NO_GENERATION:
            return 0
        raise
    return int(struct.unpack_from("=I", buf)[0])


# -- inotify ---------------------------------------------------------------------------
# pyinotify's wrapper calls inotify_init() without flags and encodes paths strictly, so the
# three calls are bound here; the inotify source parses the records itself.

_inotify_init1 = _libc.inotify_init1
_inotify_init1.argtypes = [ctypes.c_int]
_inotify_init1.restype = ctypes.c_int
_inotify_add_watch = _libc.inotify_add_watch
_inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_inotify_add_watch.restype = ctypes.c_int
_inotify_rm_watch = _libc.inotify_rm_watch
_inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
_inotify_rm_watch.restype = ctypes.c_int


def inotify_init1(flags: int) -> int:
    """``inotify_init1(2)``: a new inotify fd.

    Raises:
        OSError: ``EMFILE`` (``max_user_instances``), ``ENFILE``, ``ENOMEM``.
    """
    fd: int = _inotify_init1(flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def inotify_add_watch(fd: int, path: bytes, mask: int) -> int:
    """``inotify_add_watch(2)``: the watch descriptor of ``path``.

    Raises:
        OSError: ``ENOENT``, ``ENOTDIR``, ``EACCES``, ``ENOSPC`` (``max_user_watches``)...
    """
    wd: int = _inotify_add_watch(fd, path, mask)
    if wd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), os.fsdecode(path))
    return wd


def inotify_rm_watch(fd: int, wd: int) -> bool:
    """``inotify_rm_watch(2)``; False when the kernel had dropped the watch already (EINVAL).

    Raises:
        OSError: any other error (``EBADF``).
    """
    if _inotify_rm_watch(fd, wd) < 0:
        err = ctypes.get_errno()
        if err == errno.EINVAL:
            return False
        raise OSError(err, os.strerror(err))
    return True


# -- file handles ----------------------------------------------------------------------
# name_to_handle_at(2) and open_by_handle_at(2) (Linux >= 2.6.39, glibc >= 2.14). A handle
# is ``struct file_handle { u32 handle_bytes; int handle_type; u8 f_handle[]; }``; its
# layout is the filesystem's own (ext4: type 1, FILEID_INO32_GEN = u32 ino, u32 gen).
# Opening one needs CAP_DAC_READ_SEARCH (6.10 relaxed this only for O_DIRECTORY handles
# in a user namespace that owns the mount).

MAX_HANDLE_SZ = 128  # the kernel refuses larger handles (include/linux/exportfs.h)
AT_EMPTY_PATH = 0x1000
AT_SYMLINK_FOLLOW = 0x400
_HANDLE_HEADER = struct.Struct("=Ii")

_name_to_handle_at = _libc.name_to_handle_at
_name_to_handle_at.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]
_name_to_handle_at.restype = ctypes.c_int
_open_by_handle_at = _libc.open_by_handle_at
_open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
_open_by_handle_at.restype = ctypes.c_int


class _HandleBuffers(threading.local):
    """Each thread's ``struct file_handle`` and mount id, allocated once."""

    def __init__(self) -> None:
        self.handle = ctypes.create_string_buffer(_HANDLE_HEADER.size + MAX_HANDLE_SZ)
        self.mount_id = ctypes.c_int()


_handle_buffers = _HandleBuffers()


def _raise_for_handle(err: int, what: str, path: str | None = None) -> NoReturn:
    if err == errno.EPERM:
        raise SourceUnavailable(
            err, f"{what} refused (EPERM): opening file handles needs CAP_DAC_READ_SEARCH (root)"
        )
    if err == errno.ESTALE:
        raise FileNotFoundError(
            err, f"{what}: stale file handle (the inode is gone, or its generation changed)"
        )
    if err in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise SourceUnavailable(
            err, f"{what} is unsupported here ({os.strerror(err)}): the filesystem has no handles"
        )
    if path is None:
        raise OSError(err, os.strerror(err))
    raise OSError(err, os.strerror(err), path)


def name_to_handle_at(
    dirfd: int, path: str | bytes | os.PathLike[str], flags: int = 0
) -> tuple[int, int, bytes]:
    """``name_to_handle_at(2)``: the file handle of ``path`` (relative to ``dirfd``).

    Args:
        dirfd: A directory fd, :data:`os.AT_FDCWD`-like ``-100``, or with
            :data:`AT_EMPTY_PATH` and ``path=""`` the fd of the file itself.
        path: The file; symlinks in its last component are not followed unless ``flags``
            has :data:`AT_SYMLINK_FOLLOW`.
        flags: ``AT_EMPTY_PATH``, ``AT_SYMLINK_FOLLOW``.

    Returns:
        ``(mount_id, handle_type, handle_bytes)``. Needs no privilege.

    Raises:
        SourceUnavailable: The filesystem cannot encode handles (``EOPNOTSUPP``; tmpfs
            before 6.6, procfs...).
        OSError: ``ENOENT``, ``ENOTDIR``, ``EBADF``, ``EACCES``...
    """
    name = os.fsencode(path)
    buffers = _handle_buffers
    _HANDLE_HEADER.pack_into(buffers.handle, 0, MAX_HANDLE_SZ, 0)
    if _name_to_handle_at(dirfd, name, buffers.handle, ctypes.byref(buffers.mount_id), flags):
        _raise_for_handle(ctypes.get_errno(), "name_to_handle_at", os.fsdecode(name))
    size, handle_type = _HANDLE_HEADER.unpack_from(buffers.handle)
    start = _HANDLE_HEADER.size
    return buffers.mount_id.value, handle_type, buffers.handle.raw[start : start + size]


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """``open_by_handle_at(2)``: open the file a handle names (``O_CLOEXEC`` is always added).

    Args:
        mount_fd: Any fd on the filesystem (and mount) the handle belongs to; the new
            fd's path is seen through this mount.
        handle_type: The type that :func:`name_to_handle_at` returned.
        handle: The handle's bytes (at most :data:`MAX_HANDLE_SZ`).
        flags: ``open(2)`` flags; ``O_PATH`` opens without touching the file.

    Returns:
        A new file descriptor; the caller closes it.

    Raises:
        SourceUnavailable: ``EPERM`` (the caller lacks CAP_DAC_READ_SEARCH) or
            ``EOPNOTSUPP`` (the filesystem cannot decode handles).
        FileNotFoundError: ``ESTALE``: the inode no longer exists or has another
            generation (its number was reused). ``errno`` is ``ESTALE``.
        ValueError: ``handle`` is longer than :data:`MAX_HANDLE_SZ`.
        OSError: ``EBADF``, ``EINVAL`` (a malformed handle), ``ELOOP``...
    """
    if len(handle) > MAX_HANDLE_SZ:
        raise ValueError(f"a file handle has at most {MAX_HANDLE_SZ} bytes, got {len(handle)}")
    buffers = _handle_buffers
    _HANDLE_HEADER.pack_into(buffers.handle, 0, len(handle), handle_type)
    ctypes.memmove(ctypes.addressof(buffers.handle) + _HANDLE_HEADER.size, handle, len(handle))
    fd: int = _open_by_handle_at(mount_fd, buffers.handle, flags | os.O_CLOEXEC)
    if fd < 0:
        _raise_for_handle(ctypes.get_errno(), "open_by_handle_at")
    return fd


# -- fanotify (added for aioduet.sources.fanotify) -------------------------------------
# fanotify_init(2) and fanotify_mark(2) (Linux >= 2.6.37; FAN_REPORT_FID 5.1, DFID_NAME
# 5.9, FAN_RENAME and FAN_REPORT_TARGET_FID 5.17) and fstatfs(2) for the filesystem id
# that every fid record names. Values from include/uapi/linux/fanotify.h; the records
# themselves are parsed by aioduet.sources._fanotify_wire.

FAN_CLASS_NOTIF = 0x0000_0000
FAN_CLOEXEC = 0x0000_0001
FAN_NONBLOCK = 0x0000_0002
FAN_REPORT_FID = 0x0000_0200
FAN_REPORT_DIR_FID = 0x0000_0400
FAN_REPORT_NAME = 0x0000_0800
FAN_REPORT_TARGET_FID = 0x0000_1000
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

FAN_MARK_ADD = 0x0000_0001
FAN_MARK_REMOVE = 0x0000_0002
FAN_MARK_DONT_FOLLOW = 0x0000_0004
FAN_MARK_FILESYSTEM = 0x0000_0100

_fanotify_init = _libc.fanotify_init
_fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_fanotify_init.restype = ctypes.c_int
_fanotify_mark = _libc.fanotify_mark
_fanotify_mark.argtypes = [
    ctypes.c_int,
    ctypes.c_uint,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_char_p,
]
_fanotify_mark.restype = ctypes.c_int
_fstatfs = _libc.fstatfs
_fstatfs.argtypes = [ctypes.c_int, ctypes.c_void_p]
_fstatfs.restype = ctypes.c_int


class _Statfs(ctypes.Structure):
    # struct statfs as glibc declares it (bits/statfs.h, the 64-bit file offset variant).
    _fields_ = (
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_uint64),
        ("f_bfree", ctypes.c_uint64),
        ("f_bavail", ctypes.c_uint64),
        ("f_files", ctypes.c_uint64),
        ("f_ffree", ctypes.c_uint64),
        ("f_fsid", ctypes.c_char * 8),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    )


def fanotify_init(flags: int, event_f_flags: int) -> int:
    """``fanotify_init(2)``: a new fanotify group's fd.

    Raises:
        OSError: ``EPERM`` (the flags need CAP_SYS_ADMIN), ``EINVAL`` (a flag the kernel
            does not know), ``EMFILE`` (``/proc/sys/fs/fanotify/max_user_groups``),
            ``ENOSYS`` (a kernel without fanotify).
    """
    fd: int = _fanotify_init(flags, event_f_flags)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def fanotify_mark(fd: int, flags: int, mask: int, dirfd: int, path: str | bytes | None) -> None:
    """``fanotify_mark(2)``: add, change or remove a mark of ``path`` (or of ``dirfd``).

    Raises:
        OSError: ``EPERM`` (filesystem marks need CAP_SYS_ADMIN), ``EXDEV`` or
            ``EOPNOTSUPP`` (the filesystem cannot report file handles, or a subvolume),
            ``ENOENT`` (removing a mark that does not exist), ``ENOSPC`` (``max_user_marks``).
    """
    name = None if path is None else os.fsencode(path)
    if _fanotify_mark(fd, flags, mask, dirfd, name) < 0:
        err = ctypes.get_errno()
        if name is None:
            raise OSError(err, os.strerror(err))
        raise OSError(err, os.strerror(err), os.fsdecode(name))


def filesystem_id(fd: int) -> bytes:
    """The 8 bytes of ``f_fsid`` (``fstatfs(2)``) of the filesystem that ``fd`` is on.

    fanotify names the filesystem of every reported file handle by these bytes.

    Raises:
        OSError: ``EBADF``, ``ENOSYS``...
    """
    buf = _Statfs()
    if _fstatfs(fd, ctypes.byref(buf)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return bytes(buf.f_fsid)


__all__ += [  # the fanotify names, kept apart from the list above
    "FAN_CLASS_NOTIF",
    "FAN_CLOEXEC",
    "FAN_MARK_ADD",
    "FAN_MARK_DONT_FOLLOW",
    "FAN_MARK_FILESYSTEM",
    "FAN_MARK_REMOVE",
    "FAN_NONBLOCK",
    "FAN_REPORT_DFID_NAME",
    "FAN_REPORT_DIR_FID",
    "FAN_REPORT_FID",
    "FAN_REPORT_NAME",
    "FAN_REPORT_TARGET_FID",
    "fanotify_init",
    "fanotify_mark",
    "filesystem_id",
]
