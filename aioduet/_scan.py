"""Residency reports of files and trees: what ``aioduet scan`` prints, without the CLI.

One ``cachestat(2)`` call per file (open, size, cachestat, close) gives every count that
util-linux ``fincore`` shows -- cached, dirty, under writeback, evicted, recently evicted --
for files nobody has open. Where the kernel has no cachestat (older than 6.5), the scan falls
back to ``mincore(2)`` over windows of :data:`MINCORE_WINDOW` bytes (never a whole huge file
at once), which gives the cached count only: the other counts are ``None``.

A file whose residency the kernel will not tell -- cachestat's ``EPERM`` for a file the
caller could not open for writing, or a file the caller cannot open at all -- is reported
as *unknown* (``cached`` and the other counts ``None``) and counted in :class:`Scan`; it is
never reported as cached. Unreadable directories are counted and skipped.

The walk uses :func:`os.scandir` on a directory fd and never follows symbolic links below
the paths it was given, so symlink loops cannot make it hang. Per file it costs four syscalls
(``openat`` relative to the directory, ``lseek`` for the size, ``cachestat``, ``close``) and a
few Python operations: that loop is the whole cost of a scan, so it is written flat on purpose,
and :meth:`Scan.batches` hands out plain tuples by the thousand. A scan can also be split
between processes by directory (:class:`Scan`'s ``parts``; the command line forks one).

``aioduet scan`` is timed against vmtouch and fincore start-up included
(``bench/scan_tree.py``), so this module imports nothing heavy: no attrs, no anyio.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

from . import _kernel
from .errors import SourceUnavailable

__all__ = [
    "BATCH",
    "JSON_KEYS",
    "MINCORE_WINDOW",
    "Progress",
    "Residency",
    "Row",
    "Scan",
    "Totals",
    "human_size",
    "json_line",
    "table_header",
    "table_row",
    "total_json",
    "total_row",
]

MINCORE_WINDOW = 64 << 20
"""Bytes mapped at a time by the mincore fallback."""

JSON_KEYS = (
    "path",
    "size",
    "pages",
    "cached",
    "dirty",
    "writeback",
    "evicted",
    "recently_evicted",
)
"""The keys of a ``--json`` line, in order (fixed by DESIGN.md)."""

BATCH = 1024
"""Most files in one list of :meth:`Scan.batches`."""

Row = tuple[str, int | None, int | None, int | None, int | None, int | None, int | None, int | None]
"""A :class:`Residency` as a plain tuple, the fields in the same order."""

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_SUBDIR_FLAGS = _DIR_FLAGS | os.O_NOFOLLOW
# Vanished, or replaced (by a file, or a symbolic link: ELOOP) during the scan.
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


class Residency(NamedTuple):
    """The page-cache residency of one file (a tuple: the scan makes one per file).

    ``size`` and ``pages`` are ``None`` only when the file could not even be stat'ed;
    ``cached`` is ``None`` when the residency is unknown; ``dirty``, ``writeback``,
    ``evicted`` and ``recently_evicted`` are also ``None`` under the mincore fallback.
    Every count is in pages of :data:`aioduet._kernel.PAGE_SIZE` bytes.
    """

    path: str
    size: int | None
    pages: int | None
    cached: int | None
    dirty: int | None
    writeback: int | None
    evicted: int | None
    recently_evicted: int | None

    @property
    def unknown(self) -> bool:
        """Whether the kernel did not tell (or the file could not be opened)."""
        return self.cached is None


def _unknown(path: str, size: int | None) -> Residency:
    pages = None if size is None else -(-size // _kernel.PAGE_SIZE)
    return Residency(path, size, pages, None, None, None, None, None)


class Scan:
    """One scan over files and directories, with counts of what it could not see.

    Iterate :meth:`run` for one :class:`Residency` per regular file; the counters are
    final once it is exhausted.

    A plain class, not attrs: importing attrs would be a good part of ``aioduet scan``'s
    start-up (see the module docstring).

    Args:
        recursive: Descend into subdirectories (never through symbolic links).
        window: Bytes the mincore fallback maps at a time (a multiple of the page size).
        parts: Split the directories among this many scans (processes made by fork,
            each with its own :class:`Scan`).
        part: Which of the ``parts`` this scan reports: the files of the directories whose
            path hashes to it (and counts those directories if unreadable). Part 0 also
            reports the files given as paths and counts the paths skipped, so that merged
            counters count each once.

    Raises:
        ValueError: ``window`` is no positive multiple of the page size, or ``part`` is
            not in ``range(parts)``.
    """

    __slots__ = (
        "files",
        "first_problem",
        "mincore_fallback",
        "part",
        "parts",
        "reasons",
        "recursive",
        "skipped",
        "unknown",
        "unreadable_dirs",
        "window",
    )

    def __init__(
        self, recursive: bool = False, window: int = MINCORE_WINDOW, parts: int = 1, part: int = 0
    ) -> None:
        if window <= 0 or window % _kernel.PAGE_SIZE:
            raise ValueError(f"window must be a positive multiple of {_kernel.PAGE_SIZE}")
        if not 0 <= part < parts:
            raise ValueError(f"part must be in [0, {parts}), not {part}")
        self.recursive = recursive
        self.window = window
        self.parts = parts
        self.part = part
        self.files = 0
        """Files reported so far, unknown ones included."""
        self.unknown = 0
        """Files reported as unknown."""
        self.unreadable_dirs = 0
        """Directories that could not be listed (skipped)."""
        self.skipped = 0
        """Paths given that are neither regular files nor directories (skipped)."""
        self.mincore_fallback = False
        """Set once cachestat turned out to be missing: counts come from mincore since."""
        self.reasons: dict[str, int] = {}
        """Why files were unknown, directories unreadable or paths skipped: message -> count."""
        self.first_problem: str | None = None
        """The first such problem, with its path."""

    def __repr__(self) -> str:
        return (
            f"Scan(recursive={self.recursive}, files={self.files}, unknown={self.unknown},"
            f" unreadable_dirs={self.unreadable_dirs}, skipped={self.skipped})"
        )

    def run(self, paths: Iterable[str]) -> Iterator[Residency]:
        """Report every regular file among ``paths`` and in the directories among them.

        A directory given is listed (its regular files, not its subdirectories) or, with
        :attr:`recursive`, walked; symbolic links are followed for the paths given but never
        inside directories. Files vanishing during the scan are left out silently.

        Raises:
            FileNotFoundError: A path given does not exist (callers check beforehand).
        """
        make = Residency._make
        for batch in self.batches(paths):
            yield from map(make, batch)

    def batches(self, paths: Iterable[str]) -> Iterator[list[Row]]:
        """What :meth:`run` reports, as plain tuples in lists of up to :data:`BATCH` files.

        The command line formats whole lists: this spares it a :class:`Residency` and a few
        Python operations per file, which are a good part of the cost of a scan.
        """
        for path in paths:
            st = os.stat(path)
            if stat.S_ISDIR(st.st_mode):
                yield from self._walk(path)
            elif self.part:
                continue
            elif stat.S_ISREG(st.st_mode):
                found = self._measure(path, st.st_size)
                if found is not None:
                    yield [found]
            else:
                self.skipped += 1
                self._problem(path, "not a regular file or directory")

    def summary(self) -> str | None:
        """One line saying what the scan could not see, or ``None`` if it saw everything."""
        parts = []
        if self.unknown:
            parts.append(f"{self.unknown} file{'s' * (self.unknown != 1)} unknown")
        if self.unreadable_dirs:
            plural = "directories" if self.unreadable_dirs != 1 else "directory"
            parts.append(f"{self.unreadable_dirs} {plural} unreadable")
        if self.skipped:
            parts.append(f"{self.skipped} path{'s' * (self.skipped != 1)} skipped")
        if not parts:
            return None
        return f"{', '.join(parts)} (first: {self.first_problem})"

    def _problem(self, path: str, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if self.first_problem is None:
            self.first_problem = f"{path}: {reason}"

    def _walk(self, top: str) -> Iterator[list[Row]]:  # noqa: PLR0912, PLR0915 - hot loop
        # The hot loop of a scan: the common case (openat, lseek, cachestat, close) is inlined
        # with local names; anything unusual goes through _measure, which handles it. Files
        # are opened relative to their directory's fd: one path component to resolve, not all.
        measure, recursive, page = self._measure, self.recursive, _kernel.PAGE_SIZE
        parts, part = self.parts, self.part
        open_, lseek, close, cachestat = os.open, os.lseek, os.close, _kernel.cachestat
        stack = [top]
        while stack:
            directory = stack.pop()
            # Each directory belongs to one part of a split, by the hash of its path: str
            # hashes are salted per interpreter, and a fork keeps the salt, so the processes
            # agree on every directory, even one made during the scan. (Splitting by file name
            # instead: the processes then contend in the kernel, and the split gains nothing.)
            mine = parts == 1 or hash(directory) % parts == part
            if not (mine or recursive):
                continue
            prefix = directory if directory.endswith("/") else directory + "/"
            dfd = self._open_directory(directory, directory is top, mine)
            if dfd < 0:
                continue
            subdirectories: list[str] = []
            batch: list[Row] = []
            append = batch.append
            try:
                with os.scandir(dfd) as entries:
                    for entry in entries:
                        # d_type answers both without a syscall on ext4, xfs, btrfs, tmpfs.
                        if entry.is_file(follow_symlinks=False):
                            if not mine:
                                continue
                            name = entry.name
                            if not self.mincore_fallback:
                                try:
                                    fd = open_(name, _OPEN_FLAGS, dir_fd=dfd)
                                except OSError:
                                    fd = -1
                                if fd >= 0:
                                    try:
                                        size = lseek(fd, 0, os.SEEK_END)
                                        cs: _kernel.CacheStat | None = cachestat(fd)
                                    except OSError:
                                        cs = None
                                    finally:
                                        close(fd)
                                    if cs is not None:
                                        self.files += 1
                                        append((prefix + name, size, -(-size // page), *cs))
                                        if len(batch) >= BATCH:
                                            yield batch
                                            batch = []
                                            append = batch.append
                                        continue
                            found = measure(prefix + name, None)
                            if found is not None:
                                append(found)
                        elif recursive and entry.is_dir(follow_symlinks=False):
                            subdirectories.append(prefix + entry.name)
            except OSError as exc:
                if mine:
                    self.unreadable_dirs += 1
                    self._problem(directory, exc.strerror or str(exc))
            finally:
                close(dfd)
            if batch:
                yield batch
            stack.extend(reversed(subdirectories))  # depth first, in directory order

    def _open_directory(self, directory: str, given: bool, mine: bool) -> int:
        """An fd of ``directory`` to list and to open its files at; -1 if it cannot be.

        A failure is counted only by the part of a split that the directory belongs to.
        """
        try:
            # Below the paths given, never through a symbolic link (one swapped in since).
            return os.open(directory, _DIR_FLAGS if given else _SUBDIR_FLAGS)
        except OSError as exc:
            if (exc.errno not in _GONE or given) and mine:
                self.unreadable_dirs += 1
                self._problem(directory, exc.strerror or str(exc))
            return -1

    def _measure(self, path: str, size: int | None) -> Residency | None:
        """Count the pages of one regular file; ``None`` if it vanished."""
        self.files += 1
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in _GONE:
                self.files -= 1
                return None
            return self._refused(path, size, exc.strerror or str(exc))
        try:
            if size is None:
                size = os.lseek(fd, 0, os.SEEK_END)  # cheaper than fstat's stat_result
            if not self.mincore_fallback:
                try:
                    cs = _kernel.cachestat(fd)
                except SourceUnavailable:
                    self.mincore_fallback = True
                else:
                    pages = -(-size // _kernel.PAGE_SIZE)
                    return Residency(
                        path,
                        size,
                        pages,
                        cs.cache,
                        cs.dirty,
                        cs.writeback,
                        cs.evicted,
                        cs.recently_evicted,
                    )
            return self._mincore(fd, path, size)
        except OSError as exc:  # ResidencyUnknown (cachestat's EPERM) among them
            return self._refused(path, size, exc.strerror or str(exc))
        finally:
            os.close(fd)

    def _mincore(self, fd: int, path: str, size: int) -> Residency:
        cached = 0
        for offset in range(0, size, self.window):
            cached += _kernel.mincore(fd, min(self.window, size - offset), offset).count(1)
        pages = -(-size // _kernel.PAGE_SIZE)
        return Residency(path, size, pages, cached, None, None, None, None)

    def _refused(self, path: str, size: int | None, reason: str) -> Residency:
        if size is None:
            try:
                size = os.stat(path, follow_symlinks=False).st_size
            except OSError:
                size = None
        self.unknown += 1
        self._problem(path, reason)
        return _unknown(path, size)


_COUNTS = JSON_KEYS[1:]


class Totals:
    """Sums over the files of a scan; a count is ``None`` when no file had it known.

    A plain class, not attrs, as :class:`Scan`.
    """

    __slots__ = ("files", "known", "sums", "unknown")

    def __init__(self) -> None:
        self.files = 0
        """Files added."""
        self.unknown = 0
        """Files whose residency was unknown (their counts are left out of the sums)."""
        self.sums = dict.fromkeys(_COUNTS, 0)
        """Sum of each count over the files where it was known."""
        self.known = dict.fromkeys(_COUNTS, 0)
        """How many files each sum covers."""

    def add(self, found: Row) -> None:
        """Add one file's counts."""
        self.files += 1
        self.unknown += found[3] is None
        sums, known = self.sums, self.known
        for name, value in zip(_COUNTS, found[1:], strict=True):
            if value is not None:
                sums[name] += value
                known[name] += 1

    def value(self, name: str) -> int | None:
        """The sum of count ``name``, or ``None`` if it was known for none of the files."""
        if self.files and not self.known[name]:
            return None
        return self.sums[name]


# -- formatting ----------------------------------------------------------------------------


def human_size(size: int | None) -> str:
    """``1536`` -> ``"1.5K"``, as fincore prints sizes (powers of 1024); ``None`` -> ``"?"``."""
    if size is None:
        return "?"
    if size < 1024:
        return f"{size}B"
    value = float(size)
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024 or unit == "E":
            break
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text}{unit}"


def json_line(found: Row) -> str:
    """One ``--json`` line: the keys of :data:`JSON_KEYS`, ``null`` where unknown."""
    if found[4] is None:  # dirty: unknown, or the mincore fallback
        return json.dumps(dict(zip(JSON_KEYS, found, strict=True)), separators=(",", ":"))
    path, size, pages, cached, dirty, writeback, evicted, recent = found
    return (
        f'{{"path":{encode_basestring_ascii(path)},"size":{size},"pages":{pages},'
        f'"cached":{cached},"dirty":{dirty},"writeback":{writeback},"evicted":{evicted},'
        f'"recently_evicted":{recent}}}'
    )


def total_json(totals: Totals) -> str:
    """The ``--total`` line of ``--json``: ``"path": null``, ``"total": true`` and the sums."""
    record: dict[str, object] = {"path": None, "total": True}
    record.update((name, totals.value(name)) for name in _COUNTS)
    record.update(files=totals.files, unknown=totals.unknown)
    return json.dumps(record, separators=(",", ":"))


_HEADER = ("RES", "CACHED", "PAGES", "SIZE", "DIRTY", "WRITEBACK", "EVICTED", "RECENT")
_WIDTHS = (7, 9, 9, 7, 8, 9, 8, 8)
_HEADER_LINE = " ".join(f"{title:>{width}}" for title, width in zip(_HEADER, _WIDTHS, strict=True))


def table_header() -> str:
    """The table's heading line (columns as :func:`table_row` fills them)."""
    return f"{_HEADER_LINE} FILE"


def _cell(value: int | None) -> str:
    return "?" if value is None else str(value)


def _row(cached: int | None, counts: tuple[int | None, ...], size: int | None, name: str) -> str:
    res = None if cached is None else cached * _kernel.PAGE_SIZE
    pages, dirty, writeback, evicted, recent = counts
    return (
        f"{human_size(res):>7} {_cell(cached):>9} {_cell(pages):>9} {human_size(size):>7}"
        f" {_cell(dirty):>8} {_cell(writeback):>9} {_cell(evicted):>8} {_cell(recent):>8} {name}"
    )


def table_row(found: Row) -> str:
    """One table line: resident bytes, cached pages, pages, size, dirty... then the path.

    Unknown counts print as ``?``.
    """
    path, size, pages, cached, dirty, writeback, evicted, recent = found
    return _row(cached, (pages, dirty, writeback, evicted, recent), size, path)


def total_row(totals: Totals) -> str:
    """The ``--total`` table line: the sums, and the file counts in the FILE column."""
    value = totals.value
    counts = tuple(value(name) for name in ("pages", "dirty", "writeback", "evicted"))
    label = f"total: {totals.files} files"
    if totals.unknown:
        label += f", {totals.unknown} unknown"
    return _row(value("cached"), (*counts, value("recently_evicted")), value("size"), label)


class Progress:
    """Files scanned and seconds elapsed, redrawn in place on a terminal at most 5x a second."""

    def __init__(self, write: Callable[[str], object], interval: float = 0.2) -> None:
        self._write = write
        self._interval = interval
        self._started = time.monotonic()
        self._next = self._started + interval
        self._shown = False

    def update(self, files: int) -> None:
        """Redraw if the interval has passed (call it every few hundred files)."""
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            self._shown = True
            self._write(f"\rscanned {files} files in {now - self._started:.1f} s")

    def clear(self) -> None:
        """Erase the progress line, if one was drawn."""
        if self._shown:
            self._write("\r\x1b[K")
            self._shown = False
