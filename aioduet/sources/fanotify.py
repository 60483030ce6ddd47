"""The ``fanotify`` source: filesystem-wide file hints without a watch per directory (root).

Kernel interface: fanotify (Linux >= 5.17 for ``FAN_RENAME`` and ``FAN_REPORT_TARGET_FID``),
one group reporting file handles (``FAN_REPORT_DFID_NAME | FAN_REPORT_FID |
FAN_REPORT_TARGET_FID``) with one ``FAN_MARK_FILESYSTEM`` mark per filesystem that holds a
scope, read on the event loop. An event names the directory by its file handle and the
entry by name; the directory handle is opened (``open_by_handle_at(2)``, ``O_PATH``) and its
path read from ``/proc/self/fd``, cached per handle (LRU), and events outside every scope
or excluded are dropped. Like the inotify source it reports files, never pages: reads,
writes and creations become residency checks through the sink's
:class:`~aioduet.sources.Checker`, a new directory a tree check, and deletions and renames
keep its paths current. Trees of any size cost no watches (inotify needs one per
directory, bounded by ``max_user_watches``).

Needs CAP_SYS_ADMIN (filesystem marks) and CAP_DAC_READ_SEARCH (opening handles); without
them :meth:`FanotifySource.run` raises :class:`~aioduet.errors.SourceUnavailable`.

What it cannot see: memory-mapped reads and writes, page-cache evictions, and a filesystem
that cannot encode file handles or has no fsid (its mark fails and is counted as an error).
What it sees too much of: a filesystem mark reports every change on that filesystem, under
every mount of it, so the cost grows with the activity of the whole filesystem, not of the
scopes (each event is read and its directory looked up in the cache before it is dropped).
Paths are read through the mount of the first scope root on the filesystem, and when the
event is read rather than when it happened: a directory renamed since reports under its new
name, a directory deleted since drops its pending events (its deletion is reported by its
parent). The kernel queue holds ``/proc/sys/fs/fanotify/max_queued_events`` events (16384);
on ``FAN_Q_OVERFLOW`` every scope gets OVERFLOW and a rescan (:meth:`Sink.lost`).
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict
from collections.abc import Iterable

import anyio
import anyio.abc
import attrs

from .. import _kernel
from .._paths import Exclusions, is_under
from .._status import SourceStatus
from ..errors import SourceUnavailable
from . import _fanotify_wire as wire
from ._base import Introduction, Sink
from ._counters import SourceCounters
from ._scopes import Scopes

__all__ = ["FanotifySource"]

INIT_FLAGS = (
    _kernel.FAN_CLASS_NOTIF
    | _kernel.FAN_CLOEXEC
    | _kernel.FAN_NONBLOCK
    | _kernel.FAN_REPORT_DFID_NAME
    | _kernel.FAN_REPORT_FID
    | _kernel.FAN_REPORT_TARGET_FID
)
_CAP_DAC_READ_SEARCH = 2
_CAP_SYS_ADMIN = 21
_STRUCTURAL = wire.FAN_CREATE | wire.FAN_DELETE | wire.FAN_RENAME
_DELETED = " (deleted)"

_Dir = tuple[str, bool]
"""A directory's path and whether it lies in a scope, excluded by nothing on the way."""


def _patterns(patterns: Iterable[str]) -> tuple[str, ...]:
    if isinstance(patterns, str):
        raise TypeError("exclude must be a list of patterns, not a single str")
    return tuple(patterns)


def _missing_privilege() -> str | None:
    """Why this process cannot use filesystem marks and handles; None when it can."""
    euid = os.geteuid()
    if euid != 0:
        return f"uid {euid}, not root"
    try:
        with open("/proc/self/status") as f:
            caps = next((line for line in f if line.startswith("CapEff:")), None)
    except OSError:
        return None  # no /proc to ask: let the kernel answer
    if caps is None:
        return None
    effective = int(caps.split()[1], 16)
    missing = [
        name
        for bit, name in (
            (_CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            (_CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
        )
        if not effective >> bit & 1
    ]
    return f"root without {' and '.join(missing)}" if missing else None


@attrs.define(eq=False)
class _Mark:
    """The mark of one filesystem: the fd it was made through, which is the mount fd."""

    fd: int
    fsid: bytes
    roots: set[str] = attrs.Factory(set)


@attrs.define(eq=False)
class FanotifySource:
    """Watches whole filesystems with fanotify and turns events in the scopes into hints.

    Args:
        sink: where hints go (its ``checker``; without one, they are dropped) and where lost
            observations are reported.
        exclude: fnmatch patterns matched against each absolute path and each base name;
            events for matching files, and for anything below a matching directory, are
            dropped.
        hints: report reads and writes too (the default); False asks the kernel only for
            creations, deletions and renames, for use beside an exact source.
        read_size: bytes per ``read(2)`` of the fanotify fd.
        reads_per_wakeup: reads at most per wake-up, so that other tasks get the loop.
        cache_size: directories whose paths are kept (least recently used goes first).
    """

    sink: Sink
    exclude: tuple[str, ...] = attrs.field(default=(), converter=_patterns)
    hints: bool = True
    """False beside an exact source: only what changes paths (no read/write events)."""
    read_size: int = attrs.field(default=1 << 16, validator=attrs.validators.ge(4096))
    reads_per_wakeup: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    cache_size: int = attrs.field(default=16384, validator=attrs.validators.ge(1))
    _exclusions: Exclusions = attrs.field(init=False)
    _roots: Scopes = attrs.field(init=False, factory=Scopes)
    _ready: dict[str, anyio.Event] = attrs.field(init=False, factory=dict)
    _fd: int = attrs.field(init=False, default=-1)
    _marks: dict[int, _Mark] = attrs.field(init=False, factory=dict)
    """st_dev -> mark."""
    _by_fsid: dict[bytes, _Mark] = attrs.field(init=False, factory=dict)
    _root_dev: dict[str, int] = attrs.field(init=False, factory=dict)
    _dirs: OrderedDict[bytes, _Dir | None] = attrs.field(init=False, factory=OrderedDict)
    """Directory fid key -> path and verdict; None for a directory that is gone."""
    _counts: SourceCounters = attrs.field(init=False, factory=SourceCounters)
    _resolves: int = attrs.field(init=False, default=0)
    _outside: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        self._exclusions = Exclusions(self.exclude)

    @property
    def name(self) -> str:
        return "fanotify"

    @property
    def marks(self) -> int:
        """Filesystems marked now (one per filesystem, whatever the number of directories)."""
        return len(self._marks)

    @property
    def resolves(self) -> int:
        """Directory handles opened so far to learn a path (cache misses)."""
        return self._resolves

    @property
    def outside(self) -> int:
        """Events dropped so far because they lay outside every scope or were excluded."""
        return self._outside

    @property
    def mask(self) -> int:
        """The events asked of the kernel."""
        return wire.PATH_MASK | (wire.HINT_MASK if self.hints else 0)

    # -- scopes --------------------------------------------------------------------------

    def add_scope(self, root: str) -> None:
        if self._roots.add(root):
            self._ready[root] = anyio.Event()
            if self._fd >= 0:
                self._mark(root)

    def remove_scope(self, root: str) -> None:
        if not self._roots.remove(root):
            return
        ready = self._ready.pop(root, None)
        if ready is not None:
            ready.set()  # nobody may wait for a scope that is gone
        self._forget_verdicts()
        dev = self._root_dev.pop(root, None)
        mark = None if dev is None else self._marks.get(dev)
        if dev is None or mark is None:
            return
        mark.roots.discard(root)
        if not mark.roots:
            self._unmark(dev, mark)

    async def introduce(self, root: str, intro: Introduction) -> None:
        """Return once ``root``'s filesystem is marked; hints come later, as events.

        Waits for :meth:`run` to have started if it has not yet.
        """
        ready = self._ready.get(root)
        if ready is not None:
            await ready.wait()

    def _mark(self, root: str) -> None:
        """Mark ``root``'s filesystem unless marked already; failures are counted errors."""
        ready = self._ready.get(root)
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            self._counts.error(f"{root}: {exc.strerror}")
        else:
            dev = os.fstat(fd).st_dev
            mark = self._marks.get(dev)
            if mark is not None:
                os.close(fd)
            else:
                try:
                    fsid = _kernel.filesystem_id(fd)
                    _kernel.fanotify_mark(
                        self._fd,
                        _kernel.FAN_MARK_ADD | _kernel.FAN_MARK_FILESYSTEM,
                        self.mask,
                        fd,
                        None,
                    )
                except OSError as exc:
                    os.close(fd)
                    self._counts.error(f"fanotify_mark {root}: {exc.strerror}")
                    mark = None
                else:
                    mark = self._marks[dev] = self._by_fsid[fsid] = _Mark(fd, fsid)
            if mark is not None:
                mark.roots.add(root)
                self._root_dev[root] = dev
        self._forget_verdicts()
        if ready is not None:
            ready.set()

    def _unmark(self, dev: int, mark: _Mark) -> None:
        del self._marks[dev]
        self._by_fsid.pop(mark.fsid, None)
        try:
            _kernel.fanotify_mark(
                self._fd,
                _kernel.FAN_MARK_REMOVE | _kernel.FAN_MARK_FILESYSTEM,
                self.mask,
                mark.fd,
                None,
            )
        except OSError as exc:
            self._counts.error(f"fanotify_mark (remove): {exc.strerror}")
        os.close(mark.fd)
        self._dirs.clear()

    # -- running -------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Mark the scopes' filesystems and read events until cancelled.

        Raises:
            SourceUnavailable: not root (CAP_SYS_ADMIN and CAP_DAC_READ_SEARCH are needed),
                or a kernel without fanotify or older than 5.17; raised before
                ``task_status.started()``.
        """
        missing = _missing_privilege()
        if missing is not None:
            raise SourceUnavailable(
                errno.EPERM,
                f"fanotify needs root: filesystem-wide marks need CAP_SYS_ADMIN and opening "
                f"file handles CAP_DAC_READ_SEARCH (running as {missing})",
            )
        try:
            fd = _kernel.fanotify_init(INIT_FLAGS, os.O_RDONLY | os.O_LARGEFILE)
        except OSError as exc:
            raise SourceUnavailable(exc.errno or errno.EIO, _init_failure(exc)) from exc
        self._fd = fd
        for root in self._roots:
            if self._ready[root].is_set():  # from an earlier run
                self._ready[root] = anyio.Event()
            self._mark(root)
        self._counts.active = True
        try:
            task_status.started()
            await self._read(fd)
        finally:
            self._counts.active = False
            self._fd = -1
            for mark in self._marks.values():
                os.close(mark.fd)  # closing the group below drops the marks themselves
            self._marks.clear()
            self._by_fsid.clear()
            self._root_dev.clear()
            self._dirs.clear()
            anyio.notify_closing(fd)
            os.close(fd)

    async def _read(self, fd: int) -> None:
        read = os.read
        size = self.read_size
        short = size - 4096  # a read this short found the queue empty (events are < 1 KiB)
        while True:
            await anyio.wait_readable(fd)
            events: list[wire.Event] = []
            for _ in range(self.reads_per_wakeup):
                try:
                    buf = read(fd, size)
                except BlockingIOError:
                    break
                parsed = wire.parse_events(buf)
                events.extend(parsed.events)
                if parsed.damaged:
                    self._counts.error(f"{parsed.damaged} malformed fanotify info records")
                if parsed.truncated:
                    self._counts.error("a fanotify read ended inside an event")
                    self._overflow()
                if len(buf) < short:
                    break
            self._counts.observations += len(events)
            self.handle(events)

    # -- events --------------------------------------------------------------------------

    def handle(self, events: Iterable[wire.Event]) -> None:
        """One batch: structural events in order, then the coalesced file hints."""
        hints: set[tuple[bytes, bytes]] = set()
        check: dict[str, None] = {}
        trees: list[str] = []
        for event in events:
            mask = event.mask
            if event.fd >= 0:
                # Never in a group reporting handles, but never leak one; a number that is
                # no open fd (EBADF) means a corrupted record, not a failed source.
                try:
                    os.close(event.fd)
                except OSError:
                    self._counts.error(f"a fanotify event carried fd {event.fd}, not open")
            if mask & wire.FAN_Q_OVERFLOW:
                self._overflow()
            elif mask & _STRUCTURAL:
                self._structural(event, check, trees)
            elif (
                mask & wire.HINT_MASK
                and not mask & wire.FAN_ONDIR
                and event.dir is not None
                and event.name
            ):
                hints.add((event.dir, event.name))
        for key, name in hints:
            # Resolved after the structural events: a file in a directory renamed in this
            # batch is checked at its new path.
            path = self._path(key, name)
            if path is not None:
                check[path] = None
            else:
                self._outside += 1
        checker = self.sink.checker
        if check and checker is not None:
            checker.check_paths(list(check))

    def _structural(self, event: wire.Event, check: dict[str, None], trees: list[str]) -> None:
        mask = event.mask
        isdir = bool(mask & wire.FAN_ONDIR)
        if mask & wire.FAN_RENAME:
            old = self._entry(event.dir, event.name)
            new = self._entry(event.new_dir, event.new_name)
            if isdir:
                self._forget_dirs(event.object, old)
            self._renamed(old, new, isdir, check, trees)
            return
        entry = self._entry(event.dir, event.name)
        if entry is None:
            return
        if mask & wire.FAN_DELETE:
            if isdir:  # empty when deleted: nothing below it is cached any more
                self._forget_dirs(event.object, None)
            self._departed(entry, isdir)
            # Created and deleted, merged into one event: which came last is not said.
            if not mask & wire.FAN_CREATE or not os.path.lexists(entry[0]):
                return
        if mask & wire.FAN_CREATE:
            self._arrived(entry, isdir, check, trees)

    def _renamed(
        self,
        old: _Dir | None,
        new: _Dir | None,
        isdir: bool,
        check: dict[str, None],
        trees: list[str],
    ) -> None:
        old_in = old is not None and old[1]
        new_in = new is not None and new[1]
        checker = self.sink.checker
        if old_in and new_in:
            assert old is not None and new is not None
            if checker is not None:
                checker.path_moved(old[0], new[0])
            return
        if old is not None:
            self._departed(old, isdir)
        if new is not None:
            self._arrived(new, isdir, check, trees)

    def _departed(self, entry: _Dir, isdir: bool) -> None:
        """A file or directory was deleted or moved out of every scope."""
        path, inside = entry
        checker = self.sink.checker
        if inside:
            if checker is not None:
                checker.path_gone(path)
        elif isdir:
            # A scope root (or a directory above one) left: its scope is gone.
            for root in self._roots:
                if is_under(root, path) and checker is not None:
                    checker.path_gone(root)
        else:
            self._outside += 1

    def _arrived(self, entry: _Dir, isdir: bool, check: dict[str, None], trees: list[str]) -> None:
        """A file or directory was created or moved in from outside every scope."""
        path, inside = entry
        if not isdir:
            if inside:
                check[path] = None
            else:
                self._outside += 1
            return
        if inside:
            found = [path]
        else:  # a directory moved to where a scope root is, or above it
            found = [r for r in self._roots if is_under(r, path) and os.path.isdir(r)]
        checker = self.sink.checker
        for tree in found:
            if any(is_under(tree, t) for t in trees):
                continue  # mkdir -p: the tree above is checked already
            trees.append(tree)
            if checker is not None:
                checker.check_tree(tree)

    def _overflow(self) -> None:
        self._counts.overflows += 1
        self._counts.lost += 1  # at least one; the kernel does not say how many
        self._dirs.clear()  # renames may be among the lost events
        self.sink.lost(None)

    # -- paths ---------------------------------------------------------------------------

    def _entry(self, key: bytes | None, name: bytes | None) -> _Dir | None:
        """The path of ``name`` in directory ``key`` and whether it is in a scope."""
        if key is None or not name:
            return None
        found = self._dir(key)
        if found is None:
            return None
        parent, inside = found
        path = (parent if parent != "/" else "") + "/" + os.fsdecode(name)
        return path, inside and not self._exclusions.remembered(path)

    def _path(self, key: bytes, name: bytes) -> str | None:
        """The path of ``name`` in directory ``key`` when it is in a scope, else None."""
        found = self._dir(key)
        if found is None or not found[1]:
            return None
        parent = found[0]
        path = (parent if parent != "/" else "") + "/" + os.fsdecode(name)
        return None if self._exclusions.remembered(path) else path

    def _dir(self, key: bytes) -> _Dir | None:
        cache = self._dirs
        try:
            found = cache[key]
        except KeyError:
            pass
        else:
            cache.move_to_end(key)
            return found
        found = self._resolve(key)
        cache[key] = found
        if len(cache) > self.cache_size:
            cache.popitem(last=False)
        return found

    def _resolve(self, key: bytes) -> _Dir | None:
        fsid, handle_type, handle = wire.split_fid(key)
        mark = self._by_fsid.get(fsid)
        if mark is None:
            return None  # a filesystem unmarked since
        self._resolves += 1
        try:
            fd = _kernel.open_by_handle_at(mark.fd, handle_type, handle, os.O_PATH)
        except FileNotFoundError:
            return None  # ESTALE: deleted since
        except OSError as exc:
            self._counts.error(f"open_by_handle_at: {exc.strerror}")
            return None
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
            if path.endswith(_DELETED) and os.fstat(fd).st_nlink == 0:
                return None
        except OSError as exc:
            self._counts.error(f"reading a directory's path: {exc.strerror}")
            return None
        finally:
            os.close(fd)
        return path, self._inside(path)

    def _inside(self, path: str) -> bool:
        """Whether directory ``path`` lies in a scope with no excluded directory on the way."""
        exclusions = self._exclusions
        for root in self._roots:
            if is_under(path, root) and not exclusions.covers(path, root):
                return True
        return False

    def _forget_dirs(self, key: bytes | None, entry: _Dir | None) -> None:
        """A directory was renamed or deleted: forget it and every cached path below it."""
        if key is not None:
            self._dirs.pop(key, None)
        if entry is None:
            return
        path = entry[0]
        stale = [k for k, v in self._dirs.items() if v is not None and is_under(v[0], path)]
        for k in stale:
            del self._dirs[k]

    def _forget_verdicts(self) -> None:
        """The scopes changed: every cached inside/outside verdict may be wrong."""
        self._dirs.clear()

    # -- status --------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        return self._counts.status(self.name)


def _init_failure(exc: OSError) -> str:
    """The message for a failed ``fanotify_init``."""
    if exc.errno == errno.EINVAL:
        return (
            "fanotify unavailable: the kernel refused FAN_REPORT_TARGET_FID "
            "(Linux >= 5.17 is needed)"
        )
    if exc.errno == errno.ENOSYS:
        return "fanotify unavailable: the kernel is built without it (CONFIG_FANOTIFY)"
    if exc.errno == errno.EMFILE:
        return "fanotify unavailable: too many groups (see /proc/sys/fs/fanotify/max_user_groups)"
    if exc.errno == errno.EPERM:
        return "fanotify needs root: fanotify_init refused (EPERM; CAP_SYS_ADMIN is needed)"
    return f"fanotify unavailable: {exc.strerror}"
