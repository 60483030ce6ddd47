"""index.py SRC --out FILE: a content index of SRC for deduplication, cached files first.

Each regular file is cut into fixed 64 KiB chunks (the last one shorter) and each chunk is
hashed with SHA-256. FILE is JSON lines: a header, then one object per file sorted by relative
path, so that the output is the same whatever order the files were processed in::

    {"format": "aioduet-example-index", "version": 1, "chunk_size": 65536, "hash": "sha256"}
    {"path": "a/b.bin", "size": 200000, "chunks": ["5c1f...", "09ab...", "77d0...", "e3b4..."]}

Two chunks with the same hash hold the same 64 KiB, wherever they are: a deduplicating store
keeps one copy. Fixed-size chunks find duplicates at the same offsets (copies of files, and
files that differ in place); content-defined chunking would also find shifted data, at the
cost of a rolling hash that Python computes slowly.

Natural order: inode number, as indexers that read the inode table (and ``find``-based jobs
on ext4, whose readdir returns entries in hash order) visit files. A file is hashed up to the
end of file that its reads meet. Unreadable files are left out of the index and counted.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys

import _tool

PROG = "index.py"
CHUNK_SIZE = 64 * 1024
HEADER = {
    "format": "aioduet-example-index",
    "version": 1,
    "chunk_size": CHUNK_SIZE,
    "hash": "sha256",
}


def chunk_hashes(path: str) -> tuple[int, list[str]]:
    """The size read and the SHA-256 (hex) of each 64 KiB chunk, reading 1 MiB at a time."""
    hashes: list[str] = []
    size = 0
    with open(path, "rb", buffering=0) as f:
        while data := _read_full(f, _tool.CHUNK):
            view = memoryview(data)
            hashes.extend(
                hashlib.sha256(view[at : at + CHUNK_SIZE]).hexdigest()
                for at in range(0, len(data), CHUNK_SIZE)
            )
            size += len(data)
    return size, hashes


def _read_full(f: io.FileIO, size: int) -> bytes:
    # Only the end of file may cut a 64 KiB chunk short: read on after a short read.
    data = f.read(size)
    while data and len(data) < size:
        more = f.read(size - len(data))
        if not more:
            break
        data += more
    return data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a deduplication index of SRC (SHA-256 of each 64 KiB chunk of each "
        "regular file) to FILE, processing cached files first (aioduet) or in inode order "
        '(--no-duet). Prints one JSON line {"files", "bytes", "seconds", "read_bytes"} on '
        "stdout. The index is sorted by path: the same with and without aioduet.",
        epilog="Exit codes: 0 done; 2 bad arguments, missing SRC or unwritable FILE; 3 some "
        "files could not be read (reported on stderr, left out of the index).",
    )
    parser.add_argument("src", metavar="SRC", help="directory to index")
    parser.add_argument("--out", metavar="FILE", required=True, help="index to write")
    _tool.add_common_options(parser, natural="inode")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stats = _tool.start(args)
    src = _tool.source_directory(parser, args.src)
    try:
        out = open(args.out, "w", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except OSError as exc:
        _tool.usage_error(parser, f"{args.out}: {exc.strerror}")
    with out:
        tree = _tool.walk(src, exclude=[os.path.realpath(args.out)])
        order = _tool.ordered(tree, args.order, PROG)
        entries: dict[str, tuple[int, list[str]]] = {}

        def index(path: str) -> int:
            size, hashes = chunk_hashes(path)
            entries[tree.relative(path)] = (size, hashes)
            return size

        _tool.run(PROG, args, tree, order, index, stats=stats)
        out.write(json.dumps(HEADER) + "\n")
        for rel in sorted(entries, key=lambda rel: rel.split(os.sep)):
            size, hashes = entries[rel]
            out.write(json.dumps({"path": rel, "size": size, "chunks": hashes}) + "\n")
    for rel, reason in tree.errors:
        _tool.warn(PROG, f"{rel}: cannot list: {reason}; skipped")
    print(stats.json_line(), flush=True)
    return _tool.EXIT_SKIPPED if stats.skipped or tree.errors else _tool.EXIT_OK


if __name__ == "__main__":
    sys.exit(_tool.main_wrapper(PROG, main))
