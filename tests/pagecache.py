"""Helpers that put real files into known page-cache states (ext4, real kernel)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from aioduet import Uuid, _kernel


def write_clean(path: Path, pages: int) -> Path:
    """Write a file of ``pages`` pages, flush it to disk and evict it from the cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(os.urandom(pages * _kernel.PAGE_SIZE))
        f.flush()
        os.fsync(f.fileno())
        _kernel.evict(f.fileno())
    return path


def read_pages(path: Path, first: int = 0, count: int | None = None) -> int:
    """Read pages without readahead beyond them; returns cachestat's cached count after."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        size = os.fstat(fd).st_size
        end = size if count is None else (first + count) * _kernel.PAGE_SIZE
        offset = first * _kernel.PAGE_SIZE
        while offset < end:
            chunk = os.pread(fd, min(1 << 20, end - offset), offset)
            if not chunk:
                break
            offset += len(chunk)
        return _kernel.cachestat(fd).cache
    finally:
        os.close(fd)


@contextlib.contextmanager
def opened(path: Path, flags: int = os.O_RDONLY) -> Iterator[int]:
    """An fd of ``path``, closed on leaving."""
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def evict(path: Path) -> None:
    with opened(path) as fd:
        _kernel.evict(fd)


def cached(path: Path) -> int:
    with opened(path) as fd:
        return _kernel.cachestat(fd).cache


def uuid_of(path: Path) -> Uuid:
    """The uuid aioduet gives the file (with its inode generation)."""
    with opened(path) as fd:
        return Uuid.from_stat(os.fstat(fd), _kernel.inode_generation(fd))


def make_tree(root: Path, dirs: int, files: int, size: int) -> Path:
    """``dirs`` directories of ``files`` files of ``size`` bytes each, just written (cached)."""
    for d in range(dirs):
        sub = root / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f:03}").write_bytes(b"x" * size)
    return root
