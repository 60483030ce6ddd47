"""Tests of aioduet._kernel against the real kernel, on real files on ext4 under /tmp.

A DAMON daemon on the test machines evicts idle page cache within about a minute, so each
test reads what it needs right before asserting on it. Oracles: util-linux ``fincore``
(page counts) and ``lsattr -v`` (inode generation).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioduet import _kernel
from aioduet._kernel import (
    PAGE_SIZE,
    CacheStat,
    cachestat,
    cachestat_supported,
    dirty_runs,
    evict,
    inode_generation,
    mincore,
    page_runs,
    prefetch,
)
from aioduet.errors import AioduetError, ResidencyUnknown, SourceUnavailable
from aioduet.sources._pagemap import runs as page_runs_of

pytestmark = pytest.mark.kernel

MIB = 1 << 20


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp"))  # ext4: never /dev/shm for residency claims
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def tmp_ext4() -> Iterator[Path]:
    with scratch_dir() as path:
        yield path


@contextlib.contextmanager
def open_fd(path: Path, flags: int = os.O_RDWR) -> Iterator[int]:
    fd = os.open(path, flags | os.O_CREAT, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def write_clean(fd: int, pages: int) -> None:
    """Fill the file with ``pages`` pages, one write per page, and write them back.

    One page per write makes ext4 cache order-0 folios, so dirty state is per page.
    """
    for page in range(pages):
        os.pwrite(fd, os.urandom(PAGE_SIZE), page * PAGE_SIZE)
    os.fsync(fd)


def write_evicted(fd: int, size: int) -> None:
    os.pwrite(fd, os.urandom(size), 0)
    os.fsync(fd)
    evict(fd)


def fincore_pages(path: Path) -> int:
    out = subprocess.run(
        ["/usr/bin/fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[0])


def naive_runs(vector: bytes, value: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, b in enumerate(vector):
        if b != value:
            continue
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


# cachestat


def test_cachestat_supported_on_this_kernel() -> None:
    assert cachestat_supported() is True


def test_cachestat_counts_agree_with_fincore(tmp_ext4: Path) -> None:
    path, pages = tmp_ext4 / "f", MIB // PAGE_SIZE
    with open_fd(path) as fd:
        write_evicted(fd, MIB)
        assert cachestat(fd) == CacheStat(0, 0, 0, 0, 0)
        assert fincore_pages(path) == 0

        with path.open("rb") as f:
            assert len(f.read()) == MIB
        stat = cachestat(fd)
        assert fincore_pages(path) == pages
        assert stat == CacheStat(pages, 0, 0, 0, 0)


def test_cachestat_ranges_cover_whole_pages(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        write_evicted(fd, 64 * PAGE_SIZE)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no readahead past the read
        os.pread(fd, 10 * PAGE_SIZE, 10 * PAGE_SIZE)
        assert cachestat(fd, 10 * PAGE_SIZE, 10 * PAGE_SIZE).cache == 10
        assert cachestat(fd).cache == 10
        assert cachestat(fd, 0, 10 * PAGE_SIZE).cache == 0
        assert cachestat(fd, 20 * PAGE_SIZE).cache == 0  # length 0: to the end
        assert cachestat(fd, 10 * PAGE_SIZE - 1, 2).cache == 1  # straddles pages 9 and 10
        assert cachestat(fd, 19 * PAGE_SIZE + 7, 1).cache == 1


def test_cachestat_refuses_unwritable_file_after_dropping_root(tmp_ext4: Path) -> None:
    os.chmod(tmp_ext4, 0o755)
    path = tmp_ext4 / "f"
    with open_fd(path) as fd:
        write_evicted(fd, 16 * PAGE_SIZE)
    code = f"""
import os
from aioduet import _kernel
from aioduet.errors import ResidencyUnknown
fd = os.open({str(path)!r}, os.O_RDONLY)
os.setuid(65534)
print(_kernel.mincore(fd, 16 * _kernel.PAGE_SIZE).count(1))
try:
    _kernel.cachestat(fd)
except ResidencyUnknown as exc:
    print("unknown", exc.errno)
"""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    # mincore pretends an evicted file is all resident; cachestat says EPERM instead.
    assert out == ["16", "unknown", str(errno.EPERM)]


def test_cachestat_errors(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        with pytest.raises(ValueError, match="offset"):
            cachestat(fd, -1)
        with pytest.raises(ValueError, match="length"):
            cachestat(fd, 0, -PAGE_SIZE)
    with pytest.raises(OSError, match="Bad file descriptor") as info:
        cachestat(fd)  # closed above
    assert info.value.errno == errno.EBADF
    assert not isinstance(info.value, AioduetError)


def test_raise_for_maps_errnos() -> None:
    with pytest.raises(SourceUnavailable, match=r"older than 6\.5") as unavailable:
        _kernel._raise_for(errno.ENOSYS, "cachestat")
    assert unavailable.value.errno == errno.ENOSYS
    for err in (errno.EPERM, errno.EACCES):
        with pytest.raises(ResidencyUnknown, match="cannot tell which pages") as unknown:
            _kernel._raise_for(err, "cachestat")
        assert unknown.value.errno == err
    with pytest.raises(OSError) as other:
        _kernel._raise_for(errno.EBADF, "cachestat")
    assert type(other.value) is OSError
    assert other.value.errno == errno.EBADF


# mincore


def test_mincore_sees_exactly_the_pages_read(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        write_evicted(fd, 64 * PAGE_SIZE)
        assert mincore(fd, 64 * PAGE_SIZE) == bytes(64)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        os.pread(fd, 10 * PAGE_SIZE, 10 * PAGE_SIZE)
        vector = mincore(fd, 64 * PAGE_SIZE)
        assert page_runs_of(vector) == [(10, 10)]
        assert set(vector) == {0, 1}


def test_mincore_lengths(tmp_ext4: Path) -> None:
    size = 3 * PAGE_SIZE + 5
    with open_fd(tmp_ext4 / "f") as fd:
        os.write(fd, os.urandom(size))  # cached and dirty: every page resident
        assert mincore(fd, size) == b"\x01" * 4
        assert mincore(fd, 1) == b"\x01"
        assert mincore(fd, 10 * size) == b"\x01" * 4  # clipped to the file's size
        assert mincore(fd, 0) == b""
        with pytest.raises(ValueError, match="size"):
            mincore(fd, -1)
    with open_fd(tmp_ext4 / "empty") as fd:
        assert mincore(fd, PAGE_SIZE) == b""


def test_mincore_unmappable_is_unknown(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f", os.O_WRONLY) as fd:
        os.write(fd, os.urandom(PAGE_SIZE))
        with pytest.raises(ResidencyUnknown) as info:
            mincore(fd, PAGE_SIZE)  # a read-only map of a write-only fd: EACCES
        assert info.value.errno == errno.EACCES
    fd = os.open(tmp_ext4, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ResidencyUnknown):
            mincore(fd, os.fstat(fd).st_size)  # directories cannot be mapped: ENODEV
    finally:
        os.close(fd)


def test_cache_runs_agree_with_mincore(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        write_evicted(fd, 200 * PAGE_SIZE)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        for first, count in [(0, 3), (7, 1), (8, 1), (50, 60), (199, 1)]:
            os.pread(fd, count * PAGE_SIZE, first * PAGE_SIZE)
        runs = page_runs(fd, 200 * PAGE_SIZE, "cache")
        assert runs == page_runs_of(mincore(fd, 200 * PAGE_SIZE))
        assert runs == [(0, 3), (7, 2), (50, 60), (199, 1)]


# dirty pages


def test_dirty_runs_finds_written_pages(tmp_ext4: Path) -> None:
    size = 64 * PAGE_SIZE
    with open_fd(tmp_ext4 / "f") as fd:
        write_clean(fd, 64)
        assert dirty_runs(fd, size) == []
        for page in (5, 20, 40):
            os.pwrite(fd, b"x", page * PAGE_SIZE + 100)
        assert dirty_runs(fd, size) == [(5, 1), (20, 1), (40, 1)]
        os.pwrite(fd, b"y", 41 * PAGE_SIZE)
        assert dirty_runs(fd, size) == [(5, 1), (20, 1), (40, 2)]
        assert dirty_runs(fd, size, total_dirty=cachestat(fd).dirty) == [(5, 1), (20, 1), (40, 2)]
        assert dirty_runs(fd, 30 * PAGE_SIZE) == [(5, 1), (20, 1)]
        os.fsync(fd)
        assert dirty_runs(fd, size) == []
        assert page_runs(fd, size, "writeback") == []


def test_dirty_runs_follow_large_folios(tmp_ext4: Path) -> None:
    # ext4 caches a big sequential read in large folios, and the kernel tags dirtiness per
    # folio: one written byte makes a power-of-two run aligned on its length.
    size = 8 * MIB
    with open_fd(tmp_ext4 / "f") as fd:
        write_evicted(fd, size)
        with (tmp_ext4 / "f").open("rb") as f:
            while f.read(MIB):
                pass
        page = 1000
        os.pwrite(fd, b"x", page * PAGE_SIZE + 3)
        [(first, count)] = dirty_runs(fd, size)
        os.fsync(fd)
    assert first <= page < first + count
    assert count & (count - 1) == 0
    assert first % count == 0


def test_page_runs_rejects_unknown_field(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd, pytest.raises(ValueError, match="field"):
        page_runs(fd, PAGE_SIZE, "dirt")


@settings(max_examples=20, deadline=None)
@given(st.sets(st.integers(0, 63), max_size=20))
def test_dirty_runs_match_pages_written(pages: set[int]) -> None:
    with scratch_dir() as tmp, open_fd(tmp / "f") as fd:
        write_clean(fd, 64)
        for page in pages:
            os.pwrite(fd, os.urandom(PAGE_SIZE), page * PAGE_SIZE)
        runs = dirty_runs(fd, 64 * PAGE_SIZE)
        os.fsync(fd)
    vector = bytes(1 if page in pages else 0 for page in range(64))
    assert runs == naive_runs(vector, 1)


# eviction


def test_evict_drops_clean_pages(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        write_clean(fd, 32)
        os.pread(fd, 32 * PAGE_SIZE, 0)
        assert cachestat(fd).cache == 32
        evict(fd)
        assert cachestat(fd).cache == 0


def test_evict_keeps_dirty_pages(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        os.pwrite(fd, os.urandom(16 * PAGE_SIZE), 0)
        assert cachestat(fd).dirty == 16
        evict(fd)  # starts writeback of the dirty pages, drops none of them
        after = cachestat(fd)
        os.fsync(fd)
    assert after.cache == 16
    assert after.dirty + after.writeback <= after.cache


def test_prefetch_reads_into_cache(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        write_evicted(fd, 64 * PAGE_SIZE)
        prefetch(fd, 8 * PAGE_SIZE, 8 * PAGE_SIZE)
        assert cachestat(fd, 8 * PAGE_SIZE, 8 * PAGE_SIZE).cache == 8


# inode generation


def test_inode_generation_matches_lsattr(tmp_ext4: Path) -> None:
    path = tmp_ext4 / "f"
    with open_fd(path) as fd:
        generation = inode_generation(fd)
    out = subprocess.run(
        ["lsattr", "-v", str(path)], check=True, capture_output=True, text=True
    ).stdout
    assert isinstance(generation, int)
    assert 0 <= generation < 1 << 32
    assert generation == int(out.split()[0])


def test_inode_generation_on_tmpfs_does_not_raise() -> None:
    with tempfile.TemporaryFile(dir="/dev/shm") as f:
        assert isinstance(inode_generation(f.fileno()), int)


def test_inode_generation_bad_fd_raises(tmp_ext4: Path) -> None:
    with open_fd(tmp_ext4 / "f") as fd:
        pass
    with pytest.raises(OSError) as info:
        inode_generation(fd)
    assert info.value.errno == errno.EBADF


# file handles


def ino32_gen(ino: int, gen: int) -> bytes:
    """An ext4 handle (FILEID_INO32_GEN): u32 ino, u32 gen in host order."""
    return ino.to_bytes(4, sys.byteorder) + gen.to_bytes(4, sys.byteorder)


def test_name_to_handle_at_gives_ext4_ino_and_generation(tmp_ext4: Path) -> None:
    path = tmp_ext4 / "f"
    with open_fd(path, os.O_RDWR | os.O_CREAT) as fd:
        st, gen = os.fstat(fd), inode_generation(fd)
        by_fd = _kernel.name_to_handle_at(fd, "", _kernel.AT_EMPTY_PATH)
    mount_id, handle_type, handle = _kernel.name_to_handle_at(-100, str(path))  # AT_FDCWD
    assert by_fd == (mount_id, handle_type, handle)
    assert handle_type == 1  # FILEID_INO32_GEN
    assert handle == ino32_gen(st.st_ino, gen)
    assert mount_id > 0


def test_open_by_handle_at_reopens_the_file(tmp_ext4: Path) -> None:
    path = tmp_ext4 / "f"
    path.write_bytes(b"x")
    dirfd = os.open(tmp_ext4, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _, handle_type, handle = _kernel.name_to_handle_at(dirfd, "f")
        os.rename(path, tmp_ext4 / "g")
        fd = _kernel.open_by_handle_at(dirfd, handle_type, handle, os.O_RDONLY)
        try:
            assert os.read(fd, 1) == b"x"
            assert os.readlink(f"/proc/self/fd/{fd}") == str(tmp_ext4 / "g")
            assert not os.get_inheritable(fd)
        finally:
            os.close(fd)
        # ext4 takes generation 0 as "any generation" (ext4_nfs_get_inode).
        ino = int.from_bytes(handle[:4], sys.byteorder)
        gen = int.from_bytes(handle[4:], sys.byteorder)
        fd = _kernel.open_by_handle_at(dirfd, 1, ino32_gen(ino, 0), os.O_PATH)
        os.close(fd)
        with pytest.raises(FileNotFoundError) as stale:
            _kernel.open_by_handle_at(dirfd, 1, ino32_gen(ino, gen ^ 1), os.O_PATH)
        assert stale.value.errno == errno.ESTALE
        os.unlink(tmp_ext4 / "g")
        with pytest.raises(FileNotFoundError, match="stale file handle"):
            _kernel.open_by_handle_at(dirfd, handle_type, handle, os.O_PATH)
    finally:
        os.close(dirfd)


def test_file_handle_errors(tmp_ext4: Path) -> None:
    with pytest.raises(SourceUnavailable, match="no handles") as unsupported:
        _kernel.name_to_handle_at(-100, "/proc/self/status")
    assert unsupported.value.errno == errno.EOPNOTSUPP
    with pytest.raises(FileNotFoundError) as missing:
        _kernel.name_to_handle_at(-100, str(tmp_ext4 / "missing"))
    assert missing.value.filename == str(tmp_ext4 / "missing")
    with pytest.raises(ValueError, match="at most 128"):
        _kernel.open_by_handle_at(-100, 1, bytes(129), os.O_PATH)
    with pytest.raises(OSError) as bad:
        _kernel.open_by_handle_at(-1, 1, bytes(8), os.O_PATH)
    assert bad.value.errno == errno.EBADF
    assert not isinstance(bad.value, AioduetError)


def test_open_by_handle_at_needs_cap_dac_read_search(tmp_ext4: Path) -> None:
    os.chmod(tmp_ext4, 0o755)
    (tmp_ext4 / "f").write_bytes(b"")
    code = f"""
import os
from aioduet import _kernel
from aioduet.errors import SourceUnavailable
dirfd = os.open({str(tmp_ext4)!r}, os.O_RDONLY | os.O_DIRECTORY)
os.setgid(65534); os.setuid(65534)
_, handle_type, handle = _kernel.name_to_handle_at(dirfd, "f")  # encoding needs no privilege
try:
    _kernel.open_by_handle_at(dirfd, handle_type, handle, os.O_PATH)
except SourceUnavailable as exc:
    print(exc.errno, "CAP_DAC_READ_SEARCH" in str(exc))
"""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout.split()
    assert out == [str(errno.EPERM), "True"]
