"""What backup.py, scrub.py and index.py share: options, traversal orders, the run loop, the report.

Each tool walks its source directory once, puts the regular files in its natural order (or the
one ``--order`` asks for), then processes every file exactly once: in that order with
``--no-duet``, or cached-first with aioduet (``aioduet.tasks.cached_first``: the file with the
largest cached fraction first, else the next one in the order). Either way it ends by printing
one JSON line on stdout::

    {"files": 120, "bytes": 52428800, "seconds": 1.234, "read_bytes": 20971520}

``files`` and ``bytes`` count the files processed and the bytes read from them, ``seconds`` is
the wall time of the run, and ``read_bytes`` the bytes this process read from storage meanwhile
(``read_bytes`` of ``/proc/self/io``, which counts the reads that reached the block layer, not
those served by the page cache). Everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import math
import os
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

#: Files are read in chunks of this size, with plain read(2) calls (no mmap, no fadvise).
CHUNK = 1 << 20

#: Exit codes shared by the tools.
EXIT_OK = 0
EXIT_CORRUPT = 1  # scrub: a file does not match the manifest, or is missing
EXIT_USAGE = 2  # bad arguments, a missing SRC: nothing was done (argparse's code)
EXIT_SKIPPED = 3  # the run completed, but some files could not be read and were skipped
EXIT_INTERRUPTED = 130  # Ctrl-C

ORDERS = ("path", "disk", "inode")


def add_common_options(parser: argparse.ArgumentParser, natural: str) -> None:
    """The options every tool has: --no-duet, --sources, --connect, --order, --list,
    --progress."""
    parser.add_argument(
        "--no-duet",
        action="store_true",
        help="plain traversal in the order --order gives, without aioduet",
    )
    parser.add_argument(
        "--sources",
        default="auto",
        metavar="SET",
        help="aioduet sources: auto, exact, scan, or a comma-separated list of names "
        "(passed to aioduet.open_duet; default auto)",
    )
    parser.add_argument(
        "--connect",
        nargs="?",
        const="",
        default=None,
        metavar="SOCKET",
        help="use the aioduet daemon at SOCKET (default: where aioduet.connect looks) instead "
        "of an embedded framework; --sources is then the daemon's",
    )
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default=natural,
        help=f"traversal order: path (sorted walk), disk (physical offset of the first extent, "
        f"FIEMAP), inode (inode number); default {natural}, this tool's natural order",
    )
    parser.add_argument(
        "--list",
        metavar="FILE",
        help="write the relative path of each file processed to FILE, one per line, "
        "in processing order",
    )
    parser.add_argument(
        "--progress", action="store_true", help="report progress on stderr every second"
    )


def usage_error(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Exit 2 with one line on stderr, as argparse does for bad arguments (without the usage)."""
    parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")


def source_directory(parser: argparse.ArgumentParser, text: str) -> str:
    """SRC as an absolute path with symbolic links resolved; exits 2 when it is not a directory."""
    try:
        st = os.stat(text)
    except OSError as exc:
        usage_error(parser, f"{text}: {exc.strerror}")
    if not stat.S_ISDIR(st.st_mode):
        usage_error(parser, f"{text}: Not a directory")
    return os.path.realpath(text)


def warn(prog: str, message: str) -> None:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)


# -- the walk ------------------------------------------------------------------------------------


@dataclass
class Tree:
    """What one walk of SRC found, in path order (depth first, entries sorted by name)."""

    root: str
    #: directories below the root, relative paths, each before its contents
    dirs: list[str] = field(default_factory=list)
    #: regular files: absolute path -> lstat result
    files: dict[str, os.stat_result] = field(default_factory=dict)
    #: symbolic links, relative paths
    symlinks: list[str] = field(default_factory=list)
    #: directories that could not be listed (relative path, error)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.root)


def walk(root: str, exclude: Iterable[str] = ()) -> Tree:
    """Walk ``root`` without following symbolic links; ``exclude``: absolute paths to leave out.

    Other file types (FIFOs, sockets, devices) are left out too. A directory that cannot be
    listed is recorded in ``Tree.errors``; one that vanishes during the walk is ignored.
    """
    tree = Tree(root)
    skip = {os.path.abspath(path) for path in exclude}
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            tree.errors.append((tree.relative(directory), exc.strerror or str(exc)))
            continue
        below: list[str] = []
        for entry in entries:
            if entry.path in skip:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                tree.dirs.append(tree.relative(entry.path))
                below.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                tree.files[entry.path] = st
            elif stat.S_ISLNK(st.st_mode):
                tree.symlinks.append(tree.relative(entry.path))
        # Sorting by components at the end restores the walk's path order (depth first,
        # sorted names) in `files` and `dirs`.
        stack.extend(reversed(below))
    tree.files = dict(sorted(tree.files.items(), key=lambda kv: _path_key(tree, kv[0])))
    tree.dirs.sort(key=lambda rel: tuple(rel.split(os.sep)))
    return tree


def _path_key(tree: Tree, path: str) -> tuple[str, ...]:
    # Sorting by components, not by string: "a/b" comes before "a.txt" as it does in the walk.
    return tuple(tree.relative(path).split(os.sep))


# -- traversal orders ----------------------------------------------------------------------------

_FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap), linux/fs.h
_FIEMAP = struct.Struct("=QQIIII")  # fm_start, fm_length, fm_flags, mapped, extent_count, reserved
_EXTENT = struct.Struct("=QQQ16xI12x")  # fe_logical, fe_physical, fe_length, ..., fe_flags
_EXTENT_UNKNOWN = 0x2 | 0x4  # FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC: no address yet


class FiemapUnsupported(OSError):
    """The filesystem does not implement FIEMAP."""


def first_extent(path: str) -> int | None:
    """The physical byte offset of the first extent of ``path``, or None (no extent, or unknown).

    Raises:
        FiemapUnsupported: the filesystem has no FIEMAP.
        OSError: the file cannot be opened.
    """
    request = bytearray(_FIEMAP.pack(0, 2**64 - 1, 0, 0, 1, 0) + bytes(_EXTENT.size))
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _FS_IOC_FIEMAP, request, True)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
            raise FiemapUnsupported(exc.errno, exc.strerror) from None
        raise
    finally:
        os.close(fd)
    if _FIEMAP.unpack_from(request)[3] == 0:
        return None  # an empty file, or only holes
    _, physical, _, flags = _EXTENT.unpack_from(request, _FIEMAP.size)
    return None if flags & _EXTENT_UNKNOWN else int(physical)


def ordered(tree: Tree, order: str, prog: str) -> list[str]:
    """The absolute paths of the tree's regular files in ``order`` (one of ORDERS).

    ``disk``: by the physical offset of the first extent; files without one (empty, not yet
    allocated, unreadable) follow, in inode order. When the filesystem has no FIEMAP, the
    whole order falls back to inode order.
    """
    paths = list(tree.files)  # path order
    if order == "path":
        return paths
    by_inode = sorted(paths, key=lambda path: tree.files[path].st_ino)
    if order == "inode":
        return by_inode
    keys: dict[str, tuple[float, int]] = {}
    for path in by_inode:
        try:
            offset = first_extent(path)
        except FiemapUnsupported:
            warn(prog, "FIEMAP is not supported here: using inode order")
            return by_inode
        except OSError:
            offset = None
        keys[path] = (math.inf if offset is None else offset, tree.files[path].st_ino)
    return sorted(by_inode, key=keys.__getitem__)


# -- the run -------------------------------------------------------------------------------------


def read_bytes() -> int:
    """This process's bytes read from storage so far (``read_bytes`` of /proc/self/io)."""
    with open("/proc/self/io", encoding="ascii") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0  # a kernel without task I/O accounting


@dataclass
class Stats:
    """Counters of one run; ``bytes`` is what the tool read from the files it processed."""

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # could not be read (relative paths)
    vanished: list[str] = field(default_factory=list)  # deleted after the walk (relative)
    cached_picks: int = 0  # files with cached pages when cached_first picked them
    ahead: int = 0  # files that cached_first picked ahead of the order, for their pages
    ignored: int = 0  # files cached_first offered that the walk did not list
    started: float = field(default_factory=time.monotonic)
    read_bytes_start: int = field(default_factory=read_bytes)

    def json_line(self) -> str:
        return json.dumps(
            {
                "files": self.files,
                "bytes": self.bytes,
                "seconds": round(time.monotonic() - self.started, 3),
                "read_bytes": read_bytes() - self.read_bytes_start,
            }
        )


#: Processes one file (absolute path) and returns the bytes read from it; raises OSError.
Process = Callable[[str], int]


class Runner:
    """Calls ``process`` once per file, counting and reporting what fails."""

    def __init__(
        self, prog: str, tree: Tree, process: Process, args: argparse.Namespace, stats: Stats
    ) -> None:
        self.prog = prog
        self.tree = tree
        self.process = process
        self.stats = stats
        self.done: set[str] = set()
        self.progress = bool(args.progress)
        self.last_progress = self.stats.started
        self.listing: TextIO | None = None
        if args.list is not None:
            try:
                self.listing = open(args.list, "w", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
            except OSError as exc:
                raise Fatal(f"--list {args.list}: {exc.strerror}") from None

    def __call__(self, path: str) -> None:
        """Process ``path`` once; a second call for the same path is reported and ignored."""
        if path in self.done:
            warn(self.prog, f"{self.tree.relative(path)}: offered twice, processed once")
            return
        self.done.add(path)
        try:
            self.stats.bytes += self.process(path)
        except FileNotFoundError:
            self.stats.vanished.append(self.tree.relative(path))
            warn(self.prog, f"{self.tree.relative(path)}: vanished during the run, skipped")
            return
        except OSError as exc:
            self.stats.skipped.append(self.tree.relative(path))
            reason = exc.strerror or str(exc)
            warn(self.prog, f"{self.tree.relative(path)}: cannot read: {reason}; skipped")
            return
        self.stats.files += 1
        if self.listing is not None:
            print(self.tree.relative(path), file=self.listing)
        if self.progress and time.monotonic() - self.last_progress >= 1.0:
            self.last_progress = time.monotonic()
            total = len(self.tree.files)
            warn(self.prog, f"{len(self.done)}/{total} files, {self.stats.bytes >> 20} MiB")

    def run_all(self, paths: Iterable[str]) -> None:
        """Process each of ``paths`` in turn (one worker-thread call for a batch of picks)."""
        for path in paths:
            self(path)

    def close(self) -> None:
        if self.listing is not None:
            self.listing.close()


def run(
    prog: str,
    args: argparse.Namespace,
    tree: Tree,
    order: Sequence[str],
    process: Process,
    *,
    stats: Stats,
) -> None:
    """Process every file of ``order`` once, cached-first with aioduet unless --no-duet.

    ``stats`` is made by the tool when it starts, so that it counts the walk too.
    """
    runner = Runner(prog, tree, process, args, stats)
    try:
        if args.no_duet:
            for path in order:
                runner(path)
        else:
            _run_duet(prog, args, tree, order, runner)
    finally:
        runner.close()
    parts = [f"{stats.files} files, {stats.bytes} bytes"]
    if not args.no_duet:
        parts.append(
            f"{stats.cached_picks} cached when picked, {stats.ahead} of them ahead of the order"
        )
    if stats.skipped:
        parts.append(f"{len(stats.skipped)} unreadable (skipped)")
    if stats.vanished:
        parts.append(f"{len(stats.vanished)} vanished")
    if stats.ignored:
        parts.append(f"{stats.ignored} offered but not in the walk (ignored)")
    warn(prog, "; ".join(parts))


def start(args: argparse.Namespace) -> Stats:
    """Start counting (time, bytes read from storage) once the tool has imported what it needs.

    With aioduet, that is aioduet and anyio too, imported here so that their modules are not
    counted as the tool's reads (--no-duet imports neither).
    """
    if not args.no_duet:
        try:
            import anyio.to_thread  # noqa: F401, PLC0415 - see the docstring

            import aioduet  # noqa: PLC0415 - see the docstring
            from aioduet.tasks import cached_first  # noqa: F401, PLC0415 - see the docstring
        except ImportError as exc:
            raise Fatal(f"{exc} (--no-duet works without aioduet)") from None
        aioduet.open_duet  # noqa: B018 - aioduet imports its public names on first use
        aioduet.connect  # noqa: B018 - the daemon's client, for --connect
        with contextlib.suppress(ImportError):
            import uvloop  # noqa: F401, PLC0415 - used by _run_duet where installed
    return Stats()


def _run_duet(
    prog: str, args: argparse.Namespace, tree: Tree, order: Sequence[str], runner: Runner
) -> None:
    import anyio  # noqa: PLC0415 - only with aioduet: --no-duet imports neither

    options: dict[str, Any] = {}
    try:
        import uvloop  # noqa: F401, PLC0415 - only probing whether it is installed
    except ImportError:
        pass
    else:
        options["use_uvloop"] = True
    anyio.run(_cached_first, prog, args, tree, order, runner, backend_options=options)
    # cached_first visits an inode once, so the other paths of a hard-linked file are left
    # for now; it also skips files deleted since the walk. Whatever else it left out is
    # processed too, in order, so that the tool's result never depends on it.
    seen = {_inode(tree, path) for path in runner.done}
    missed = [path for path in order if path not in runner.done]
    unexpected = [
        path for path in missed if _inode(tree, path) not in seen and os.path.lexists(path)
    ]
    if unexpected:
        warn(prog, f"cached_first did not offer {len(unexpected)} files: processing them now")
    for path in missed:
        runner(path)


def _inode(tree: Tree, path: str) -> tuple[int, int]:
    st = tree.files[path]
    return st.st_dev, st.st_ino


async def _cached_first(
    prog: str, args: argparse.Namespace, tree: Tree, order: Sequence[str], runner: Runner
) -> None:
    import anyio.to_thread  # noqa: PLC0415 - only with aioduet

    import aioduet  # noqa: PLC0415 - only with aioduet
    from aioduet.tasks import cached_first  # noqa: PLC0415 - only with aioduet

    wanted = set(order)
    async with contextlib.AsyncExitStack() as stack:
        framework, option = _framework(args)
        try:
            duet = await stack.enter_async_context(framework)
        except (ValueError, aioduet.AioduetError) as exc:
            raise Fatal(f"{option}: {exc}") from None
        task = await stack.enter_async_context(duet.register(prog, aioduet.Event.EXISTS, tree.root))
        picks = cached_first(task, order=order)
        # Picks come in batches (up to 64 files, 8 MiB): the reading (and hashing, writing)
        # runs in a worker thread so that the event loop keeps draining the sources, and
        # one thread hop per small file would cost more than reading it from the cache.
        async for batch in picks.batches():
            paths = []
            for picked in batch:
                if picked.path not in wanted:
                    runner.stats.ignored += 1  # created after the walk, or excluded
                    continue
                if picked.cached > 0:
                    runner.stats.cached_picks += 1
                paths.append(picked.path)
            await anyio.to_thread.run_sync(runner.run_all, paths)
        runner.stats.ahead = picks.from_cache


def _framework(args: argparse.Namespace) -> tuple[Any, str]:
    """What ``--connect`` or ``--sources`` asks for, to enter, and the option, for errors:
    the daemon's client or an embedded framework (both are an :class:`aioduet.abc.Duet`)."""
    import aioduet  # noqa: PLC0415 - only with aioduet

    if args.connect is not None:
        return aioduet.connect(args.connect or None), f"--connect {args.connect}".rstrip()
    option = f"--sources {args.sources}"
    try:
        return aioduet.open_duet(args.sources), option
    except (ValueError, aioduet.AioduetError) as exc:
        raise Fatal(f"{option}: {exc}") from None


class Fatal(Exception):
    """Nothing more can be done: one line on stderr, exit 2."""


def main_wrapper(prog: str, main: Callable[[], int]) -> int:
    """Run a tool's main: Ctrl-C exits 130, a Fatal error exits 2, each with one line."""
    try:
        return main()
    except KeyboardInterrupt:
        warn(prog, "interrupted")
        return EXIT_INTERRUPTED
    except Fatal as exc:
        warn(prog, f"error: {exc}")
        return EXIT_USAGE
