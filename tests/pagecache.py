"""Helpers that put real files into known page-cache states (ext4, real kernel)."""

from __future__ import annotations

import os
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


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        _kernel.evict(fd)
    finally:
        os.close(fd)


def cached(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return _kernel.cachestat(fd).cache
    finally:
        os.close(fd)


def uuid_of(path: Path) -> Uuid:
    """The uuid aioduet gives the file (with its inode generation)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return Uuid.from_stat(os.fstat(fd), _kernel.inode_generation(fd))
    finally:
        os.close(fd)
