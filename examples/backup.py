"""backup.py SRC DEST: write a tar archive of SRC to DEST, cached files first.

The archive is a POSIX (pax) tar stream written with ``tarfile`` in streaming mode (``w|``),
with member names relative to SRC. It holds SRC's directories (an empty one too) and symbolic
links, taken from the walk and written first, then its regular files in processing order:
path order with ``--no-duet``, cached-first with aioduet. Extracting it (``tar -xf DEST -C
DIR``) gives back SRC's tree: names, contents, modes, owners and modification times. Hard
links become tar hard links to the first path archived. Other file types (FIFOs, sockets,
devices) are left out.

Natural order: path (a depth-first walk with the entries of each directory sorted by name),
as tar and rsync traverse a tree.

A file is archived with the size it has when it is opened: what it grows by later is left out.
A file that shrinks while it is read, or whose read fails half-way, is padded with zeros so
that the stream stays valid, and counts as unreadable. See examples/README.md for the exit
codes.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
import tarfile

import _tool

PROG = "backup.py"


class _Exact:
    """Exactly ``size`` bytes of ``f``, read in 1 MiB chunks; zeros after an early end of file
    or a read error (tarfile needs the size it wrote in the header)."""

    def __init__(self, f: io.FileIO, size: int) -> None:
        self.f = f
        self.unread = size  # bytes not taken from the file yet
        self.buffer = b""
        self.offset = 0  # in buffer
        self.read_count = 0
        self.error: OSError | None = None

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = len(self.buffer) - self.offset + self.unread
        parts = []
        while size:
            if self.offset == len(self.buffer) and not self._fill():
                break
            part = self.buffer[self.offset : self.offset + size]
            self.offset += len(part)
            size -= len(part)
            parts.append(part)
        if size and self.error is not None:
            padding = min(size, self.unread)
            parts.append(bytes(padding))
            self.unread -= padding
        return b"".join(parts)

    def _fill(self) -> bool:
        if not self.unread or self.error is not None:
            return False
        try:
            chunk = self.f.read(min(_tool.CHUNK, self.unread))
        except OSError as exc:
            self.error = exc
            return False
        if not chunk:
            self.error = OSError(errno.EIO, "the file shrank while it was read")
            return False
        self.buffer, self.offset = chunk, 0
        self.unread -= len(chunk)
        self.read_count += len(chunk)
        return True


class Backup:
    """Adds SRC's entries to a tar stream, one regular file per call."""

    def __init__(self, tar: tarfile.TarFile, tree: _tool.Tree) -> None:
        self.tar = tar
        self.tree = tree

    def add_skeleton(self) -> None:
        """The directories (each before its contents) and the symbolic links, from the walk."""
        for rel in [*self.tree.dirs, *self.tree.symlinks]:
            try:
                self.tar.addfile(self.tar.gettarinfo(os.path.join(self.tree.root, rel), rel))
            except FileNotFoundError:
                _tool.warn(PROG, f"{rel}: vanished during the run, skipped")

    def __call__(self, path: str) -> int:
        """Archive one regular file; returns the bytes read from it."""
        rel = self.tree.relative(path)
        with open(path, "rb", buffering=0) as f:
            info = self.tar.gettarinfo(arcname=rel, fileobj=f)
            if not info.isreg():  # a hard link to a file archived before: no data
                self.tar.addfile(info)
                return 0
            data = _Exact(f, info.size)
            self.tar.addfile(info, data)
        if data.error is not None:
            reason = data.error.strerror or str(data.error)
            at = data.read_count
            message = f"{reason} at byte {at} (archived with zeros from there)"
            raise OSError(data.error.errno or errno.EIO, message)
        return data.read_count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a tar archive of SRC to DEST, processing cached files first "
        "(aioduet) or in path order (--no-duet). Prints one JSON line "
        '{"files", "bytes", "seconds", "read_bytes"} on stdout.',
        epilog="Exit codes: 0 done; 2 bad arguments, missing SRC or unwritable DEST; "
        "3 some files could not be read (reported on stderr; left out of the archive, or "
        "padded with zeros when the error came half-way).",
    )
    parser.add_argument("src", metavar="SRC", help="directory to back up")
    parser.add_argument("dest", metavar="DEST", help="archive to write (a file, or /dev/null)")
    _tool.add_common_options(parser, natural="path")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stats = _tool.start(args)
    src = _tool.source_directory(parser, args.src)
    try:
        out = open(args.dest, "wb")  # noqa: SIM115 - closed by the TarFile
    except OSError as exc:
        _tool.usage_error(parser, f"{args.dest}: {exc.strerror}")
    with out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tree = _tool.walk(src, exclude=[os.path.realpath(args.dest)])
        order = _tool.ordered(tree, args.order, PROG)
        backup = Backup(tar, tree)
        backup.add_skeleton()
        _tool.run(PROG, args, tree, order, backup, stats=stats)
    for rel, reason in tree.errors:
        _tool.warn(PROG, f"{rel}: cannot list: {reason}; skipped")
    print(stats.json_line(), flush=True)
    return _tool.EXIT_SKIPPED if stats.skipped or tree.errors else _tool.EXIT_OK


if __name__ == "__main__":
    sys.exit(_tool.main_wrapper(PROG, main))
