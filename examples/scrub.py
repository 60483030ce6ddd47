"""scrub.py SRC --manifest FILE [--create]: verify (or create) SHA-256 checksums of SRC's files.

The manifest is JSON lines, one object per regular file, sorted by relative path::

    {"path": "a/b.bin", "size": 1048576, "sha256": "9f86d08..."}

``path`` is relative to SRC (a file name that is not valid UTF-8 is written with Python's
surrogate escapes), ``size`` the bytes hashed. ``jq -r '"\\(.sha256)  \\(.path)"' FILE`` turns
it into ``sha256sum -c`` input.

With ``--create`` the tool hashes every regular file and writes the manifest (replacing FILE
atomically). Without it, it hashes every regular file and compares: a file whose hash differs
(``MISMATCH``) or that is in the manifest but not in SRC (``MISSING``) is corruption, reported
on stderr, and the exit code is 1. Files in SRC but not in the manifest are reported as
``NEW`` (with their hash) and do not change the exit code. Symbolic links and other
non-regular files are not scrubbed.

Natural order: on-disk (the physical offset of each file's first extent, from the FIEMAP
ioctl; inode order where the filesystem has no FIEMAP), as a scrubber that sweeps the device
does. A file is hashed up to the end of file that its reads meet: a file that grows during the
run is hashed with what it has then.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import _tool

PROG = "scrub.py"


def sha256(path: str) -> tuple[int, str]:
    """The size read and the SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_tool.CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def load_manifest(path: str) -> dict[str, str]:
    """Relative path -> sha256 hex, from a manifest file. Raises _tool.Fatal."""
    manifest: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for number, line in enumerate(f, 1):
                try:
                    entry = json.loads(line)
                    manifest[str(entry["path"])] = str(entry["sha256"])
                except (ValueError, KeyError, TypeError):
                    raise _tool.Fatal(f"{path}:{number}: not a manifest line") from None
    except OSError as exc:
        raise _tool.Fatal(f"cannot read the manifest {path}: {exc.strerror}") from None
    return manifest


def write_manifest(path: str, entries: dict[str, tuple[int, str]]) -> None:
    """Write the entries sorted by path, replacing ``path`` atomically."""
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as f:
        for rel in sorted(entries, key=lambda rel: rel.split(os.sep)):
            size, digest = entries[rel]
            f.write(json.dumps({"path": rel, "size": size, "sha256": digest}) + "\n")
    os.replace(temporary, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Verify (or, with --create, record) the SHA-256 of every regular file "
        "under SRC, processing cached files first (aioduet) or in on-disk order (--no-duet). "
        'Prints one JSON line {"files", "bytes", "seconds", "read_bytes"} on stdout; '
        "mismatched, missing and new files are reported on stderr.",
        epilog="Exit codes: 0 intact (or manifest written); 1 corruption: a mismatched or "
        "missing file; 2 bad arguments, missing SRC, unreadable manifest; 3 some files could "
        "not be read (and no corruption was found).",
    )
    parser.add_argument("src", metavar="SRC", help="directory to scrub")
    parser.add_argument(
        "--manifest",
        metavar="FILE",
        required=True,
        help="manifest of checksums (JSON lines) to verify against, or to write with --create",
    )
    parser.add_argument(
        "--create", action="store_true", help="write the manifest instead of verifying"
    )
    _tool.add_common_options(parser, natural="disk")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    stats = _tool.start(args)
    src = _tool.source_directory(parser, args.src)
    manifest = {} if args.create else load_manifest(args.manifest)
    manifest_path = os.path.realpath(args.manifest)
    tree = _tool.walk(src, exclude=[manifest_path, f"{manifest_path}.tmp{os.getpid()}"])
    order = _tool.ordered(tree, args.order, PROG)
    found: dict[str, tuple[int, str]] = {}

    def scrub(path: str) -> int:
        size, digest = sha256(path)
        found[tree.relative(path)] = (size, digest)
        return size

    _tool.run(PROG, args, tree, order, scrub, stats=stats)
    for rel, reason in tree.errors:
        _tool.warn(PROG, f"{rel}: cannot list: {reason}; skipped")
    skipped = stats.skipped or tree.errors
    if args.create:
        write_manifest(args.manifest, found)
        print(stats.json_line(), flush=True)
        return _tool.EXIT_SKIPPED if skipped else _tool.EXIT_OK

    present = {tree.relative(path) for path in tree.files}.difference(stats.vanished)
    unlisted = tuple(rel + os.sep for rel, _ in tree.errors)  # their files are unknown
    mismatched = missing = new = 0
    for rel in sorted(manifest.keys() | found.keys(), key=lambda rel: rel.split(os.sep)):
        expected = manifest.get(rel)
        if rel not in found:
            # (else it was unreadable, or in a directory that could not be listed: reported)
            if rel not in present and not rel.startswith(unlisted):
                missing += 1
                _tool.warn(PROG, f"MISSING {rel}")
        elif expected is None:
            new += 1
            _tool.warn(PROG, f"NEW {rel} sha256 {found[rel][1]}")
        elif found[rel][1] != expected:
            mismatched += 1
            _tool.warn(PROG, f"MISMATCH {rel}: sha256 {found[rel][1]}, expected {expected}")
    _tool.warn(
        PROG,
        f"verified {len(found)} files: {mismatched} mismatched, {missing} missing, {new} new",
    )
    print(stats.json_line(), flush=True)
    if mismatched or missing:
        return _tool.EXIT_CORRUPT
    return _tool.EXIT_SKIPPED if skipped else _tool.EXIT_OK


if __name__ == "__main__":
    sys.exit(_tool.main_wrapper(PROG, main))
