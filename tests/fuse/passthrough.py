"""A small pyfuse3 passthrough filesystem for the FUSE tests, run as its own process.

Usage: ``python tests/fuse/passthrough.py SOURCE MOUNTPOINT [--writeback-cache]``

It serves the directory SOURCE (on ext4) at MOUNTPOINT and prints ``ready`` on stdout once
the kernel's INIT handshake is done (so the mount answers requests). It serves a flat or
nested tree of regular files: lookup, getattr, setattr, open, create, read, write, flush,
fsync, release, opendir, readdir, unlink and statfs; nothing else.

Inode numbers are those of the backing files (the root is ``pyfuse3.ROOT_INODE``). Files are
opened with ``keep_cache``: FUSE otherwise drops (and, with the write-back cache, writes back)
a file's cached pages on every open, so any observer that opens the file would change what it
observes. The process exits when the filesystem is unmounted, or unmounts on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pyfuse3
import trio

TIMEOUT = 1.0  # seconds the kernel may cache entries and attributes


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the backing filesystem's errors into the FUSE replies they stand for."""
    try:
        yield
    except OSError as exc:
        raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None


class Passthrough(pyfuse3.Operations):
    """Serves a backing directory, one backing fd per open file."""

    def __init__(self, source: str, *, writeback_cache: bool) -> None:
        super().__init__()
        self.enable_writeback_cache = writeback_cache
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: source}

    # -- names and attributes -----------------------------------------------------------

    def _path(self, inode: int) -> str:
        try:
            return self._paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _attrs(self, path: str, inode: int | None = None) -> pyfuse3.EntryAttributes:
        with _errors():
            st = os.lstat(path)
        if inode is None:
            inode = st.st_ino
            self._paths[inode] = path
        entry = pyfuse3.EntryAttributes()
        for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_rdev", "st_size"):
            setattr(entry, name, getattr(st, name))
        entry.st_ino = inode
        entry.st_blksize = st.st_blksize
        entry.st_blocks = st.st_blocks
        entry.st_atime_ns, entry.st_mtime_ns = st.st_atime_ns, st.st_mtime_ns
        entry.st_ctime_ns = st.st_ctime_ns
        entry.entry_timeout = entry.attr_timeout = TIMEOUT
        return entry

    def _attrs_of(self, inode: int) -> pyfuse3.EntryAttributes:
        return self._attrs(self._path(inode), inode if inode == pyfuse3.ROOT_INODE else None)

    def _child(self, parent: int, name: bytes) -> str:
        return os.path.join(self._path(parent), os.fsdecode(name))

    def init(self) -> None:
        print("ready", flush=True)

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._attrs_of(parent_inode)
        return self._attrs(self._child(parent_inode, name))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attrs_of(inode)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        with _errors():
            if fields.update_size:
                if fh is None:
                    os.truncate(path, attr.st_size)
                else:
                    os.ftruncate(fh, attr.st_size)
            if fields.update_mode:
                os.chmod(path, stat.S_IMODE(attr.st_mode))
            if fields.update_uid or fields.update_gid:
                os.chown(
                    path,
                    attr.st_uid if fields.update_uid else -1,
                    attr.st_gid if fields.update_gid else -1,
                )
            if fields.update_atime or fields.update_mtime:
                st = os.lstat(path)
                os.utime(
                    path,
                    ns=(
                        attr.st_atime_ns if fields.update_atime else st.st_atime_ns,
                        attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns,
                    ),
                )
        return self._attrs_of(inode)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        with _errors():
            st = os.statvfs(self._paths[pyfuse3.ROOT_INODE])
        data = pyfuse3.StatvfsData()
        for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail"):
            setattr(data, name, getattr(st, name))
        for name in ("f_files", "f_ffree", "f_favail", "f_namemax"):
            setattr(data, name, getattr(st, name))
        return data

    # -- directories ----------------------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        self._path(inode)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        with _errors():
            names = sorted(os.listdir(self._path(fh)))
        for position, name in enumerate(names[start_id:], start_id + 1):
            try:
                entry = self._attrs(os.path.join(self._path(fh), name))
            except pyfuse3.FUSEError:
                continue  # deleted meanwhile
            if not pyfuse3.readdir_reply(token, os.fsencode(name), entry, position):
                break

    async def releasedir(self, fh: int) -> None:
        pass

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with _errors():
            os.unlink(self._child(parent_inode, name))

    # -- files ------------------------------------------------------------------------------

    def _flags(self, flags: int) -> int:
        # With the write-back cache the kernel reads pages to fill partial writes through any
        # open file, and it keeps the file size itself: write-only and append opens must become
        # read-write opens at explicit offsets (as libfuse's passthrough examples do).
        if self.enable_writeback_cache:
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = (flags & ~os.O_ACCMODE) | os.O_RDWR
            flags &= ~os.O_APPEND
        return flags | os.O_CLOEXEC

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        with _errors():
            fd = os.open(self._path(inode), self._flags(flags) & ~os.O_CREAT)
        return pyfuse3.FileInfo(fh=fd, keep_cache=True)

    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        with _errors():
            fd = os.open(path, self._flags(flags) | os.O_CREAT, mode)
        return pyfuse3.FileInfo(fh=fd, keep_cache=True), self._attrs(path)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        with _errors():
            return os.pread(fh, size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        with _errors():
            return os.pwrite(fh, buf, off)

    async def flush(self, fh: int) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        with _errors():
            (os.fdatasync if datasync else os.fsync)(fh)

    async def release(self, fh: int) -> None:
        with _errors():
            os.close(fh)


async def serve() -> None:
    """Run the FUSE loop until the filesystem is unmounted or a signal asks us to stop."""
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def on_signal() -> None:
                async for _ in signals:
                    pyfuse3.terminate()
                    return

            nursery.start_soon(on_signal)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="the backing directory")
    parser.add_argument("mountpoint")
    parser.add_argument("--writeback-cache", action="store_true", help="enable_writeback_cache")
    args = parser.parse_args(argv)
    ops = Passthrough(os.path.realpath(args.source), writeback_cache=args.writeback_cache)
    options = set(pyfuse3.default_options) | {"fsname=aioduet-passthrough"}
    pyfuse3.init(ops, args.mountpoint, options)
    try:
        trio.run(serve)
    finally:
        # Lazy unmount as root (a no-op when the kernel already unmounted us), then close.
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main(sys.argv[1:])
