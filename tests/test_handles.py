"""Tests of aioduet._handles on real ext4 files under /tmp, as root (one test as nobody).

Oracles: ``os.stat`` of the path the test itself put the file at, and ``lsattr``-checked
``FS_IOC_GETVERSION`` (tests/test_kernel.py) for generations.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aioduet import _kernel
from aioduet._handles import HandleResolver, Resolution, Verdict

pytestmark = pytest.mark.kernel


def make(path: Path) -> tuple[int, int, int]:
    """Create ``path`` (and its parents); its ``(dev, ino, gen)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        st = os.fstat(fd)
        return st.st_dev, st.st_ino, _kernel.inode_generation(fd)
    finally:
        os.close(fd)


@pytest.fixture
def scope(ext4_dir: Path) -> Path:
    path = ext4_dir / "scope"
    path.mkdir()
    return path


@pytest.fixture
def resolver(scope: Path) -> Iterator[HandleResolver]:
    with HandleResolver.open(scope) as resolver:
        assert resolver.available, resolver.reason
        yield resolver


def test_opens_on_ext4_with_type_1_handles(resolver: HandleResolver, scope: Path) -> None:
    assert resolver.handle_type == 1
    assert resolver.root == str(scope)
    assert resolver.dev == scope.stat().st_dev


def test_resolves_a_file_and_a_directory(resolver: HandleResolver, scope: Path) -> None:
    dev, ino, gen = make(scope / "d" / "f")
    assert resolver.lookup(dev, ino, gen) == Resolution(Verdict.FOUND, str(scope / "d/f"), 1)
    assert resolver.resolve(dev, ino, gen) == str(scope / "d/f")
    d = (scope / "d").stat()
    assert resolver.resolve(d.st_dev, d.st_ino) == str(scope / "d")
    assert resolver.relevant(dev, ino, gen, str(scope / "d")) is True


def test_follows_a_rename_within_the_root(resolver: HandleResolver, scope: Path) -> None:
    dev, ino, gen = make(scope / "a" / "f")
    assert resolver.resolve(dev, ino, gen) == str(scope / "a/f")
    (scope / "b").mkdir()
    os.rename(scope / "a" / "f", scope / "b" / "g")
    # Cached answers are trusted until the caller invalidates them on a rename notification.
    assert resolver.resolve(dev, ino, gen) == str(scope / "a/f")
    resolver.invalidate(dev, ino)
    assert resolver.resolve(dev, ino, gen) == str(scope / "b/g")
    assert resolver.relevant(dev, ino, gen, str(scope / "b")) is True
    assert resolver.relevant(dev, ino, gen, str(scope / "a")) is False


def test_a_file_renamed_out_of_the_root_is_not_relevant(
    resolver: HandleResolver, scope: Path, ext4_dir: Path
) -> None:
    dev, ino, gen = make(scope / "f")
    assert resolver.relevant(dev, ino, gen, str(scope)) is True
    os.rename(scope / "f", ext4_dir / "out")
    resolver.invalidate(dev, ino)
    assert resolver.relevant(dev, ino, gen, str(scope)) is False
    assert resolver.resolve(dev, ino, gen) is None  # never a path outside the root
    assert resolver.lookup(dev, ino, gen).path == str(ext4_dir / "out")
    assert resolver.statistics().negative_cached == 1


def test_compares_whole_components(ext4_dir: Path) -> None:
    dev, ino, gen = make(ext4_dir / "ab" / "f")
    (ext4_dir / "a").mkdir()
    with HandleResolver.open(ext4_dir) as resolver:
        assert resolver.relevant(dev, ino, gen, str(ext4_dir / "a")) is False
        assert resolver.relevant(dev, ino, gen, str(ext4_dir / "ab")) is True


def test_a_root_outside_the_resolvers_root_is_undecided(
    resolver: HandleResolver, scope: Path, ext4_dir: Path
) -> None:
    dev, ino, gen = make(scope / "f")
    assert resolver.relevant(dev, ino, gen, str(ext4_dir)) is None


def test_a_hard_link_outside_is_never_a_path_inside_nor_a_false_no(
    resolver: HandleResolver, scope: Path, ext4_dir: Path
) -> None:
    dev, ino, gen = make(ext4_dir / "outside")
    os.link(ext4_dir / "outside", scope / "inside")
    found = resolver.lookup(dev, ino, gen)
    assert found.verdict is Verdict.FOUND
    assert found.links == 2
    assert found.path in (str(ext4_dir / "outside"), str(scope / "inside"))
    # readlink names one of the links: "not under the root" is not believed for it.
    assert resolver.relevant(dev, ino, gen, str(scope)) in (True, None)
    assert resolver.resolve(dev, ino, gen) in (None, str(scope / "inside"))


def test_a_deleted_file_is_gone(resolver: HandleResolver, scope: Path) -> None:
    dev, ino, gen = make(scope / "f")
    os.unlink(scope / "f")
    assert resolver.lookup(dev, ino, gen).verdict is Verdict.GONE
    assert resolver.relevant(dev, ino, gen, str(scope)) is False
    assert resolver.resolve(dev, ino, gen) is None


def test_a_deleted_file_still_open_is_gone(resolver: HandleResolver, scope: Path) -> None:
    with (scope / "f").open("w") as f:
        st = os.fstat(f.fileno())
        gen = _kernel.inode_generation(f.fileno())
        os.unlink(scope / "f")
        # The handle still opens (the inode lives) and /proc reads "... (deleted)".
        assert resolver.lookup(st.st_dev, st.st_ino, gen).verdict is Verdict.GONE


def test_a_reused_inode_number_with_another_generation_is_gone(
    resolver: HandleResolver, scope: Path
) -> None:
    dev, ino, gen = make(scope / "old")
    os.unlink(scope / "old")
    for n in range(64):  # ext4 hands the freed number out again at once
        new = make(scope / f"new{n}")
        if new[1] == ino:
            break
    else:
        pytest.fail("ext4 did not reuse the inode number")
    assert new[2] != gen
    assert resolver.lookup(dev, ino, gen).verdict is Verdict.GONE  # ESTALE
    assert resolver.resolve(*new) == str(scope / f"new{n}")  # another generation: a miss
    assert resolver.statistics().resolves == 2


def test_generation_zero_means_any_generation_on_ext4(
    resolver: HandleResolver, scope: Path
) -> None:
    dev, ino, gen = make(scope / "f")
    assert resolver.generation(dev, ino) == gen
    assert resolver.resolve(dev, ino) == str(scope / "f")
    d = scope.stat()
    fd = os.open(scope, os.O_RDONLY)
    try:
        assert resolver.generation(d.st_dev, d.st_ino) == _kernel.inode_generation(fd)
    finally:
        os.close(fd)
    os.unlink(scope / "f")
    assert resolver.generation(dev, ino) is None


def test_another_device_is_unknown(resolver: HandleResolver, scope: Path) -> None:
    dev, ino, gen = make(scope / "f")
    assert resolver.lookup(dev + 1, ino, gen).verdict is Verdict.UNKNOWN
    assert resolver.relevant(dev + 1, ino, gen, str(scope)) is None
    assert resolver.generation(dev + 1, ino) is None
    assert resolver.statistics().resolves == 0


@contextlib.contextmanager
def counting(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> Iterator[list[int]]:
    calls: list[int] = []
    real: Callable[..., Any] = getattr(target, name)

    def count(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, count)
    yield calls


def test_cache_hits_cost_no_syscall(
    resolver: HandleResolver, scope: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = make(scope / "f")
    gone = make(scope / "g")
    os.unlink(scope / "g")
    with (
        counting(monkeypatch, _kernel, "open_by_handle_at") as opens,
        counting(monkeypatch, os, "readlink") as readlinks,
        counting(monkeypatch, os, "lstat") as lstats,
    ):
        for _ in range(3):
            assert resolver.relevant(*found, str(scope)) is True
            assert resolver.relevant(*gone, str(scope)) is False
        assert (len(opens), len(readlinks), len(lstats)) == (2, 1, 1)
        assert resolver.relevant(found[0], found[1], 0, str(scope)) is True  # gen 0: any
        assert len(opens) == 2
        resolver.invalidate(found[0], found[1])
        assert resolver.relevant(*found, str(scope)) is True
        assert len(opens) == 3
    stats = resolver.statistics()
    assert (stats.hits, stats.negative_hits, stats.resolves) == (3, 2, 3)
    assert (stats.cached, stats.negative_cached) == (1, 1)


def test_caches_are_bounded_least_recently_used_first(scope: Path) -> None:
    inodes = [make(scope / f"f{n}") for n in range(3)]
    with HandleResolver.open(scope, cache_size=2, negative_size=1) as resolver:
        for inode in (*inodes, inodes[1]):
            resolver.lookup(*inode)
        assert resolver.statistics().cached == 2
        resolver.lookup(*inodes[0])  # evicted first: resolved again
        assert resolver.statistics().resolves == 4
        resolver.clear()
        assert resolver.statistics().cached == 0


def test_a_file_reachable_only_outside_a_bind_mount_is_unknown(ext4_dir: Path) -> None:
    inside = make(ext4_dir / "tree" / "in")
    outside = make(ext4_dir / "elsewhere" / "out")
    mnt = ext4_dir / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "--bind", str(ext4_dir / "tree"), str(mnt)], check=True)
    try:
        with HandleResolver.open(mnt) as resolver:
            assert resolver.available, resolver.reason
            assert resolver.resolve(*inside) == str(mnt / "in")  # seen through the mount
            # /proc reads "/" for a dentry that this mount cannot reach: not a path.
            assert resolver.lookup(*outside).verdict is Verdict.UNKNOWN
            assert resolver.relevant(*outside, str(mnt)) is None
            assert resolver.resolve(*outside) is None
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_filesystem_without_handles_is_unavailable() -> None:
    with HandleResolver.open("/proc") as resolver:
        assert not resolver.available
        assert resolver.reason is not None
        assert "no handles" in resolver.reason
        assert resolver.lookup(0, 1).verdict is Verdict.UNKNOWN


def test_close_is_idempotent_and_lookups_then_answer_unknown(scope: Path) -> None:
    dev, ino, gen = make(scope / "f")
    resolver = HandleResolver.open(scope)
    resolver.close()
    resolver.close()
    assert not resolver.available
    assert resolver.lookup(dev, ino, gen).verdict is Verdict.UNKNOWN


def test_open_raises_for_a_missing_root(ext4_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        HandleResolver.open(ext4_dir / "missing")


def test_unprivileged_reports_unavailable(ext4_dir: Path) -> None:
    os.chmod(ext4_dir, 0o755)
    dev, ino, gen = make(ext4_dir / "f")
    code = f"""
import os
from aioduet._handles import HandleResolver
os.setgid(65534); os.setuid(65534)
with HandleResolver.open({str(ext4_dir)!r}) as resolver:
    print(resolver.available)
    print(resolver.relevant({dev}, {ino}, {gen}, {str(ext4_dir)!r}))
    print(resolver.reason)
"""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    ).stdout.splitlines()
    assert out[:2] == ["False", "None"]
    assert "CAP_DAC_READ_SEARCH" in out[2]
    assert "path index" in out[2]
