"""Paths of inodes known only by ``(dev, ino, gen)``, through file handles (root only).

Page-cache tracepoints name an inode by device and number; this module finds where it is
now, even after renames the path index never saw: it builds the filesystem's file handle
from ``(ino, gen)``, opens it with ``open_by_handle_at(2)`` and ``O_PATH``, and reads the
path of the new fd from ``/proc/self/fd/N`` (11-66 us cold, REFERENCE.md section 4), so
results are cached, the negative ones too.

What it cannot do, and what the caller should fall back to (the path index):

* Opening handles needs CAP_DAC_READ_SEARCH: without it the resolver is unavailable and
  says why (:attr:`HandleResolver.reason`); the unprivileged sources keep the path index.
* A regular file whose dentry the kernel has dropped comes back *disconnected*: the handle
  holds no parent, so ``/proc/self/fd/N`` reads ``/``. Every path read is checked with
  ``lstat``; one that is not the inode makes the answer :attr:`Verdict.UNKNOWN`, never a
  wrong path. Directories are always reconnected by the kernel.
* A hard-linked file is reported under one of its names (whichever dentry the kernel
  holds), so "not under this root" is only believed for files with a single link.
* Paths are seen through the mount of the resolver's root: a file reachable only outside
  it (outside a bind mount) reads as ``/`` and is UNKNOWN; one outside the root on the
  same mount gets its real path, which is never reported as inside.
* The handle layout is the filesystem's own. Known layouts are checked at open against
  the handles the kernel makes for the root and a file in it; any other filesystem makes
  the resolver unavailable. ext4 (type 1: u32 ino, u32 gen) accepts generation 0 as "any
  generation" (``ext4_nfs_get_inode``), which is how :meth:`HandleResolver.generation`
  learns the generation of an inode known by number only.

Cached answers are trusted until :meth:`HandleResolver.invalidate`: callers invalidate on
rename, create and delete notifications, and re-check a path before handing it out.
Not thread-safe: use it from the event loop's thread.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from types import TracebackType

import attrs

from . import _kernel
from ._paths import is_under, normalize_root
from .errors import SourceUnavailable

__all__ = ["HandleResolver", "Resolution", "ResolverStatistics", "Verdict", "generation_at"]

_Encode = Callable[[int, int], bytes]

# (handle type, length) -> how to build the handle from (ino, gen). A layout is used only
# after it reproduced the kernel's own handles for the root and a file at open(). Only
# layouts verified on the project's machine kind are listed: tmpfs (type 1 in 12 bytes:
# gen, ino low, ino high) checks the generation strictly and has no FS_IOC_GETVERSION to
# learn it from, and FILEID_INO64_GEN (0x81) has no filesystem here to verify it on.
_LAYOUTS: dict[tuple[int, int], _Encode] = {
    # FILEID_INO32_GEN: ext2/3/4 (ext4_encode_fh via generic_encode_ino32_fh): u32 ino, gen.
    (1, 8): struct.Struct("=II").pack,
}
_DELETED = " (deleted)"
_PROBE_ENTRIES = 64  # directory entries looked at to find a file for the layout check


class Verdict(enum.Enum):
    """What a handle says about an inode."""

    FOUND = "found"
    """The inode is reachable at a verified path (possibly outside the resolver's root)."""
    GONE = "gone"
    """No such inode: deleted, or its number now belongs to another generation (ESTALE)."""
    UNKNOWN = "unknown"
    """The resolver cannot say: unavailable, another filesystem, or no verifiable path."""


@attrs.frozen
class Resolution:
    """The cached answer for one inode."""

    verdict: Verdict
    """Found, gone or unknown."""
    path: str | None = None
    """The verified path when FOUND, as seen through the mount of the resolver's root."""
    links: int = 0
    """``st_nlink`` when FOUND: above 1, the file may have other names than ``path``."""


_GONE = Resolution(Verdict.GONE)
_UNKNOWN = Resolution(Verdict.UNKNOWN)


@attrs.frozen
class ResolverStatistics:
    """Counters of a :class:`HandleResolver`."""

    hits: int
    """Answers from the cache of paths under the root."""
    negative_hits: int
    """Answers from the negative cache (gone, unknown, outside the root)."""
    resolves: int
    """Handles opened to answer a lookup (each one ``open_by_handle_at`` + ``readlink``)."""
    cached: int
    """Entries in the cache of paths under the root."""
    negative_cached: int
    """Entries in the negative cache."""


def generation_at(path: str, dev: int, ino: int) -> tuple[int, int] | None:
    """The generation and link count of inode ``(dev, ino)`` if ``path`` leads to it now.

    None when the path is gone, is a symbolic link, names another inode, or the filesystem
    has no generations. An inode number names one live inode at a time, so a path that leads
    to it is a path of that inode.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_ino != ino or st.st_dev != dev:
            return None
        return _kernel.inode_generation(fd), st.st_nlink
    except OSError:
        return None
    finally:
        os.close(fd)


def _find_layout(probes: list[tuple[int, int, int, bytes]]) -> _Encode | None:
    """The layout that rebuilds every probed ``(ino, gen, type, handle)``, if one does."""
    for ino, gen, handle_type, handle in probes:
        encode = _LAYOUTS.get((handle_type, len(handle)))
        if encode is None or encode(ino, gen) != handle:
            return None
    return _LAYOUTS[(probes[0][2], len(probes[0][3]))]


def _probe_file(root: str) -> str | None:
    """A regular file directly in ``root`` (its handle type may differ from a directory's)."""
    try:
        with os.scandir(root) as entries:
            for n, entry in enumerate(entries):
                if n >= _PROBE_ENTRIES:
                    break
                if entry.is_file(follow_symlinks=False):
                    return entry.name
    except OSError:
        pass
    return None


@attrs.define(eq=False)
class HandleResolver:
    """Resolves ``(dev, ino, gen)`` to the current path of the inode, for one scope root.

    Build it with :meth:`open`; close it (or use it as a context manager) when done. When
    :attr:`available` is False every lookup answers UNKNOWN at no cost.

    The root is opened for each lookup and closed after it, never held: a resolver must not
    keep its filesystem busy (``umount`` would fail with EBUSY, as for an open file). A
    lookup made when the root no longer is the directory it was (unmounted, removed,
    replaced) answers UNKNOWN.
    """

    root: str
    """The scope root, normalised; it is also the mount fd's path."""
    dev: int
    """``st_dev`` of the root: inodes of other devices are UNKNOWN."""
    reason: str | None
    """Why the resolver is unavailable; None when it works."""
    handle_type: int | None = None
    """The filesystem's handle type (1 on ext4), when it has handles."""
    cache_size: int = attrs.field(default=65536, validator=attrs.validators.ge(1))
    """Bound of the cache of paths under the root (least recently used goes first)."""
    negative_size: int = attrs.field(default=65536, validator=attrs.validators.ge(1))
    """Bound of the negative cache."""
    _fd: int = -1
    """The root's fd while :meth:`open` probes it and during each lookup; -1 otherwise."""
    _root_id: tuple[int, int] = (0, 0)
    """``(st_dev, st_ino)`` of the root when opened: a lookup checks that it still is."""
    _closed: bool = False
    _encode: _Encode | None = None
    _cache: OrderedDict[tuple[int, int], tuple[int, Resolution]] = attrs.field(factory=OrderedDict)
    _negative: OrderedDict[tuple[int, int], tuple[int, Resolution]] = attrs.field(
        factory=OrderedDict
    )
    _hits: int = 0
    _negative_hits: int = 0
    _resolves: int = 0

    @classmethod
    def open(
        cls, root: str | os.PathLike[str], *, cache_size: int = 65536, negative_size: int = 65536
    ) -> HandleResolver:
        """Check ``root`` as the mount fd and learn its filesystem's handle layout.

        Unavailability (no CAP_DAC_READ_SEARCH, a filesystem without handles or with an
        unknown layout) is not an error: the resolver reports it in :attr:`reason`.

        Raises:
            OSError: ``root`` cannot be opened as a directory (``ENOENT``, ``ENOTDIR``...).
        """
        path = normalize_root(root)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            resolver = cls(
                root=path,
                dev=st.st_dev,
                reason=None,
                cache_size=cache_size,
                negative_size=negative_size,
                fd=fd,
            )
            resolver._root_id = (st.st_dev, st.st_ino)
            resolver.reason = resolver._probe()
            resolver._fd = -1
        finally:
            os.close(fd)
        return resolver

    def _probe(self) -> str | None:
        """Check privilege and learn the layout; why the resolver cannot work, if it cannot."""
        try:
            _, handle_type, handle = _kernel.name_to_handle_at(self._fd, "", _kernel.AT_EMPTY_PATH)
            fd = _kernel.open_by_handle_at(self._fd, handle_type, handle, os.O_PATH)
        except SourceUnavailable as exc:
            return f"{exc.strerror}; paths come from the path index only"
        except OSError as exc:
            return f"file handles could not be opened on {self.root}: {exc}"
        try:
            seen = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if seen != self.root:
            return f"{self.root} reads as {seen!r} through its own handle (chroot or mount)"
        self.handle_type = handle_type
        probes = []
        try:
            for name in ("", _probe_file(self.root)):
                if name is None:
                    continue
                flags = _kernel.AT_EMPTY_PATH if name == "" else 0
                _, handle_type, handle = _kernel.name_to_handle_at(self._fd, name, flags)
                fd = os.open(name or ".", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=self._fd)
                try:
                    ino, gen = os.fstat(fd).st_ino, _kernel.inode_generation(fd)
                finally:
                    os.close(fd)
                probes.append((ino, gen, handle_type, handle))
        except OSError as exc:
            return f"the file handles of {self.root} could not be probed: {exc}"
        self._encode = _find_layout(probes)
        if self._encode is None:
            return (
                f"the file handles of {self.root} (type {self.handle_type:#x}, "
                f"{len(probes[0][3])} bytes) have a layout aioduet cannot build"
            )
        return None

    @property
    def available(self) -> bool:
        """Whether handles can be opened here (root, a filesystem with a known layout)."""
        return self.reason is None and not self._closed

    def close(self) -> None:
        """Stop: later lookups answer UNKNOWN. Idempotent."""
        self._closed = True
        self.clear()

    @contextlib.contextmanager
    def _opened_root(self) -> Iterator[bool]:
        """Open the root as the mount fd for one lookup; yields whether it is the root still."""
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            yield False
            return
        try:
            st = os.fstat(fd)
            self._fd = fd
            yield (st.st_dev, st.st_ino) == self._root_id
        finally:
            self._fd = -1
            os.close(fd)

    def __enter__(self) -> HandleResolver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- lookups ---------------------------------------------------------------------------

    def lookup(self, dev: int, ino: int, gen: int = 0) -> Resolution:
        """Where the inode is now, from the caches or by opening its handle.

        Args:
            dev: ``st_dev`` of the inode's filesystem.
            ino: Inode number.
            gen: Inode generation; 0 when unknown, which ext4 takes as "any generation",
                so a reused inode number then goes unnoticed until :meth:`invalidate`.

        Returns:
            The cached or new :class:`Resolution`. A cached answer serves a query with
            the same generation, or with generation 0; any other query is a miss.
        """
        key = (dev, ino)
        for cache in (self._cache, self._negative):
            entry = cache.get(key)
            if entry is not None and (entry[0] == gen or not gen):
                cache.move_to_end(key)
                if cache is self._cache:
                    self._hits += 1
                else:
                    self._negative_hits += 1
                return entry[1]
        if dev != self.dev or not self.available:
            return _UNKNOWN
        with self._opened_root() as usable:
            if not usable:
                return _UNKNOWN
            result = self._resolve(ino, gen)
        self._remember(key, gen, result)
        return result

    def _resolve(self, ino: int, gen: int) -> Resolution:
        assert self._encode is not None and self.handle_type is not None
        self._resolves += 1
        try:
            fd = _kernel.open_by_handle_at(
                self._fd, self.handle_type, self._encode(ino, gen), os.O_PATH
            )
        except FileNotFoundError:
            return _GONE
        except (OSError, struct.error):  # EINVAL and the like: a number the layout cannot hold
            return _UNKNOWN
        try:
            for _ in range(2):  # a second read when a rename raced with the check
                path = os.readlink(f"/proc/self/fd/{fd}")
                try:
                    st = os.lstat(path)
                except OSError:
                    st = None
                if st is not None and st.st_ino == ino and st.st_dev == self.dev:
                    return Resolution(Verdict.FOUND, path, st.st_nlink)
            if path.endswith(_DELETED) and os.fstat(fd).st_nlink == 0:
                return _GONE
            return _UNKNOWN  # disconnected dentry, or reachable only outside this mount
        finally:
            os.close(fd)

    def _remember(self, key: tuple[int, int], gen: int, result: Resolution) -> None:
        inside = result.path is not None and is_under(result.path, self.root)
        if inside:
            cache, other, bound = self._cache, self._negative, self.cache_size
        else:
            cache, other, bound = self._negative, self._cache, self.negative_size
        other.pop(key, None)
        cache[key] = (gen, result)
        cache.move_to_end(key)
        if len(cache) > bound:
            cache.popitem(last=False)

    def resolve(self, dev: int, ino: int, gen: int = 0) -> str | None:
        """The path of the inode under the resolver's root, or None.

        None covers gone, outside the root, and unknown: :meth:`lookup` tells them apart.
        A path outside the root is never returned.
        """
        result = self.lookup(dev, ino, gen)
        if result.path is not None and is_under(result.path, self.root):
            return result.path
        return None

    def relevant(self, dev: int, ino: int, gen: int, root: str) -> bool | None:
        """Whether the inode lies under ``root`` (normalised), comparing whole components.

        Returns:
            True or False when the handle says so; False for a gone inode; None when the
            resolver cannot tell (unavailable, disconnected, ``root`` not under the
            resolver's own root, or not found under ``root`` while it has other links).
        """
        if not is_under(root, self.root):
            return None
        result = self.lookup(dev, ino, gen)
        if result.verdict is Verdict.GONE:
            return False
        if result.path is None:
            return None
        if is_under(result.path, root):
            return True
        return False if result.links <= 1 else None

    def generation(self, dev: int, ino: int) -> int | None:
        """The generation of the inode that now has number ``ino``, or None.

        Opens the handle with generation 0 (accepted as "any" by ext4; other filesystems
        answer ESTALE, hence None), reopens a regular file or directory read-only through
        ``/proc/self/fd`` and asks ``FS_IOC_GETVERSION``. Not cached; about two resolves.
        """
        if dev != self.dev or not self.available:
            return None
        with self._opened_root() as usable:
            return self._generation(ino) if usable else None

    def _generation(self, ino: int) -> int | None:
        assert self._encode is not None and self.handle_type is not None
        try:
            fd = _kernel.open_by_handle_at(
                self._fd, self.handle_type, self._encode(ino, 0), os.O_PATH
            )
        except (OSError, struct.error):
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode) and not stat.S_ISDIR(os.fstat(fd).st_mode):
                return None
            flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOATIME | os.O_CLOEXEC
            try:
                data = os.open(f"/proc/self/fd/{fd}", flags)
            except OSError as exc:
                if exc.errno != errno.EPERM:  # O_NOATIME on another's file without CAP_FOWNER
                    return None
                data = os.open(f"/proc/self/fd/{fd}", flags & ~os.O_NOATIME)
            try:
                return _kernel.inode_generation(data)
            finally:
                os.close(data)
        finally:
            os.close(fd)

    # -- cache -----------------------------------------------------------------------------

    def invalidate(self, dev: int, ino: int) -> None:
        """Forget what is cached about ``(dev, ino)``: renamed, created or deleted."""
        self._cache.pop((dev, ino), None)
        self._negative.pop((dev, ino), None)

    def clear(self) -> None:
        """Forget every cached answer (after an OVERFLOW, say)."""
        self._cache.clear()
        self._negative.clear()

    def statistics(self) -> ResolverStatistics:
        """The counters so far."""
        return ResolverStatistics(
            self._hits, self._negative_hits, self._resolves, len(self._cache), len(self._negative)
        )
