"""The fanotify source on real files (root): hints, renames, new trees, deletions, overflow."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import anyio
import attrs
import pytest
from hintrig import FakeChecker, NoIntro, open_fds, recording_sink, until

from aioduet.sources import _fanotify_wire as wire
from aioduet.sources.fanotify import FanotifySource

pytestmark = [pytest.mark.anyio, pytest.mark.kernel]

ROOT = Path(__file__).resolve().parents[2]
QUEUE_LIMIT = int(Path("/proc/sys/fs/fanotify/max_queued_events").read_text())


@attrs.define
class Rig:
    source: FanotifySource
    fake: FakeChecker
    overflows: list[str | None]


def fd_kinds() -> list[str]:
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            kinds.append(os.readlink(f"/proc/self/fd/{fd}"))
    return kinds


@contextlib.asynccontextmanager
async def running(
    *roots: Path, exclude: Sequence[str] = (), hints: bool = True
) -> AsyncIterator[Rig]:
    overflows: list[str | None] = []
    sink = recording_sink(overflows)
    fake = FakeChecker()
    sink.attach(fake)
    source = FanotifySource(sink, exclude=exclude, hints=hints)
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        for root in roots:
            source.add_scope(str(root))
            with anyio.fail_after(5):
                await source.introduce(str(root), NoIntro())
        yield Rig(source, fake, overflows)
        tg.cancel_scope.cancel()
    assert not source.status().active
    assert source.marks == 0


async def barrier(rig: Rig, directory: Path) -> None:
    """Events before this one have been handled: the kernel queue is read in order."""
    mark = directory / f"barrier-{len(rig.fake.checked)}"
    mark.write_bytes(b"")
    await until(lambda: str(mark) in rig.fake.checked)


def touch(path: Path, data: bytes = b"x") -> None:
    path.write_bytes(data)


def relative(paths: Iterable[str], root: Path) -> list[str]:
    return [os.path.relpath(p, root) for p in paths]


async def test_reads_writes_creates_deletes_and_renames_are_hinted(ext4_dir: Path) -> None:
    before = open_fds()
    existing = ext4_dir / "old"
    touch(existing)
    async with running(ext4_dir) as rig:
        fake = rig.fake
        assert rig.source.marks == 1 and rig.source.name == "fanotify"
        touch(ext4_dir / "new")
        await until(lambda: str(ext4_dir / "new") in fake.checked)
        existing.read_bytes()
        await until(lambda: str(existing) in fake.checked)
        fake.checked.clear()
        with (ext4_dir / "new").open("ab") as f:
            f.write(b"more")
        await until(lambda: str(ext4_dir / "new") in fake.checked)
        (ext4_dir / "new").rename(ext4_dir / "renamed")
        await until(lambda: fake.moved)
        assert fake.moved == [(str(ext4_dir / "new"), str(ext4_dir / "renamed"))]
        existing.unlink()
        await until(lambda: fake.gone)
        assert fake.gone == [str(existing)]
        fake.checked.clear()
        os.truncate(ext4_dir / "renamed", 0)
        await until(lambda: str(ext4_dir / "renamed") in fake.checked)
        assert fake.trees == [] and fake.rescans == []
        status = rig.source.status()
        assert status.name == "fanotify" and status.active
        assert status.observations >= 6
        assert (status.errors, status.overflows, status.lost) == (0, 0, 0)
    assert open_fds() == before


async def test_without_hints_only_paths_are_reported(ext4_dir: Path) -> None:
    existing = ext4_dir / "old"
    touch(existing)
    async with running(ext4_dir, hints=False) as rig:
        fake = rig.fake
        existing.read_bytes()
        with existing.open("ab") as f:
            f.write(b"more")
        touch(ext4_dir / "new")  # a creation is still a hint: the file is new
        await until(lambda: str(ext4_dir / "new") in fake.checked)
        await barrier(rig, ext4_dir)
        assert str(existing) not in fake.checked
        (ext4_dir / "new").rename(ext4_dir / "renamed")
        existing.unlink()
        await until(lambda: fake.gone)
        assert fake.moved == [(str(ext4_dir / "new"), str(ext4_dir / "renamed"))]
        assert fake.gone == [str(existing)]


async def test_a_new_nested_tree_is_checked_once_and_its_files_hinted(ext4_dir: Path) -> None:
    async with running(ext4_dir) as rig:
        fake = rig.fake
        deep = ext4_dir / "a" / "b" / "c"
        deep.mkdir(parents=True)
        await until(lambda: fake.trees)
        touch(deep / "f")
        await until(lambda: str(deep / "f") in fake.checked)
        # mkdir -p in one batch is one tree check; a slower reader may see more batches.
        assert fake.trees[0] == str(ext4_dir / "a")
        assert all(t.startswith(str(ext4_dir / "a")) for t in fake.trees)


async def test_renames_into_and_out_of_the_scope(ext4_dir: Path) -> None:
    inside, outside = ext4_dir / "in", ext4_dir / "out"
    inside.mkdir()
    outside.mkdir()
    touch(outside / "coming")
    touch(inside / "leaving")
    (outside / "dir" / "sub").mkdir(parents=True)
    touch(outside / "dir" / "sub" / "f")
    async with running(inside) as rig:
        fake = rig.fake
        (outside / "coming").rename(inside / "coming")
        await until(lambda: str(inside / "coming") in fake.checked)
        (inside / "leaving").rename(outside / "leaving")
        await until(lambda: fake.gone)
        assert fake.gone == [str(inside / "leaving")]
        # A directory moved in is checked as a whole, and what happens in it is seen.
        (outside / "dir").rename(inside / "dir")
        await until(lambda: fake.trees)
        assert fake.trees == [str(inside / "dir")]
        touch(inside / "dir" / "sub" / "g")
        await until(lambda: str(inside / "dir" / "sub" / "g") in fake.checked)
        # ... and moved out again, it is gone and no longer reported.
        (inside / "dir").rename(outside / "dir")
        await until(lambda: str(inside / "dir") in fake.gone)
        touch(outside / "dir" / "sub" / "h")
        await barrier(rig, inside)
        assert fake.moved == []
        assert not [p for p in fake.checked if "/out/" in p or p.endswith("/h")]


async def test_a_renamed_directory_reports_new_paths(ext4_dir: Path) -> None:
    (ext4_dir / "d" / "sub").mkdir(parents=True)
    touch(ext4_dir / "d" / "sub" / "f")
    async with running(ext4_dir) as rig:
        fake = rig.fake
        touch(ext4_dir / "d" / "sub" / "f", b"y")  # caches the path of d/sub
        await until(lambda: str(ext4_dir / "d" / "sub" / "f") in fake.checked)
        (ext4_dir / "d").rename(ext4_dir / "e")
        await until(lambda: fake.moved)
        assert fake.moved == [(str(ext4_dir / "d"), str(ext4_dir / "e"))]
        assert fake.trees == []  # a rename within the scope is no new tree
        fake.checked.clear()
        touch(ext4_dir / "e" / "sub" / "f", b"z")
        await until(lambda: str(ext4_dir / "e" / "sub" / "f") in fake.checked)
        assert not [p for p in fake.checked if p.startswith(str(ext4_dir / "d") + "/")]


async def test_deletions_of_files_trees_and_the_scope_root(ext4_dir: Path) -> None:
    root = ext4_dir / "root"
    (root / "x" / "y").mkdir(parents=True)
    touch(root / "x" / "y" / "f")
    touch(root / "g")
    async with running(root) as rig:
        fake = rig.fake
        (root / "g").unlink()
        await until(lambda: str(root / "g") in fake.gone)
        shutil.rmtree(root / "x")
        await until(lambda: str(root / "x") in fake.gone)
        shutil.rmtree(root)  # the scope root itself
        await until(lambda: str(root) in fake.gone)
        status = rig.source.status()
        assert status.errors == 0 and status.last_error is None and status.overflows == 0


async def test_a_sibling_directory_outside_the_scope_is_not_reported(ext4_dir: Path) -> None:
    scope, sibling = ext4_dir / "scope", ext4_dir / "scope-sibling"
    scope.mkdir()
    (sibling / "d").mkdir(parents=True)
    touch(sibling / "d" / "x")
    async with running(scope) as rig:
        fake = rig.fake
        touch(sibling / "f")
        (sibling / "f").read_bytes()
        (sibling / "f").rename(sibling / "g")
        (sibling / "n" / "m").mkdir(parents=True)
        shutil.rmtree(sibling / "d")
        touch(ext4_dir / "top")
        await barrier(rig, scope)
        assert [p for p in fake.checked if "barrier" not in p] == []
        assert (fake.trees, fake.gone, fake.moved) == ([], [], [])
        assert rig.source.outside > 0


async def test_excluded_files_and_directories_are_ignored(ext4_dir: Path) -> None:
    (ext4_dir / "cache" / "deep").mkdir(parents=True)
    async with running(ext4_dir, exclude=["*.tmp", "cache", str(ext4_dir / "skip*")]) as rig:
        fake = rig.fake
        touch(ext4_dir / "x.tmp")
        touch(ext4_dir / "skipped")
        (ext4_dir / "skipdir").mkdir()
        touch(ext4_dir / "cache" / "f")
        touch(ext4_dir / "cache" / "deep" / "f")
        (ext4_dir / "x.tmp").rename(ext4_dir / "x.kept")
        touch(ext4_dir / "kept")
        await until(lambda: str(ext4_dir / "kept") in fake.checked)
        assert str(ext4_dir / "x.kept") in fake.checked  # moved out of the exclusion
        names = relative(fake.checked, ext4_dir)
        assert not [n for n in names if n.endswith(".tmp") or "skip" in n or "cache" in n]
        assert fake.trees == [] and fake.moved == [] and fake.gone == []


async def test_a_deep_tree_costs_one_mark_and_no_watches(ext4_dir: Path) -> None:
    # 2,000 directories: 40 chains of 50 levels.
    leaves = []
    for chain in range(40):
        path = ext4_dir.joinpath(f"c{chain}", *(f"l{level}" for level in range(49)))
        path.mkdir(parents=True)
        leaves.append(path)
    assert sum(len(dirs) for _, dirs, _ in os.walk(ext4_dir)) == 2000
    async with running(ext4_dir) as rig:
        assert rig.source.marks == 1
        assert not [k for k in fd_kinds() if k == "anon_inode:inotify"]
        marks = [
            line
            for fd in os.listdir("/proc/self/fdinfo")
            for line in _fdinfo(fd)
            if line.startswith("fanotify sdev:")
        ]
        assert len(marks) == 1  # one filesystem mark, whatever the number of directories
        for leaf in leaves:
            touch(leaf / "f")
        await until(lambda: all(str(leaf / "f") in rig.fake.checked for leaf in leaves))
        status = rig.source.status()
        assert status.errors == 0 and status.overflows == 0
        assert rig.source.resolves <= 2 * len(leaves) + 10  # directory paths are cached


def _fdinfo(fd: str) -> list[str]:
    try:
        return Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines()
    except OSError:
        return []


async def test_queue_overflow_signals_lost_and_asks_for_a_rescan(ext4_dir: Path) -> None:
    flood = ext4_dir / "flood"
    flood.mkdir()
    async with running(ext4_dir) as rig:
        # The loop is ours until the next await: the source cannot read meanwhile. Every
        # creation has a new name, so the kernel cannot merge them.
        for n in range(QUEUE_LIMIT + 1000):
            os.close(os.open(flood / str(n), os.O_CREAT | os.O_WRONLY, 0o644))
        await until(lambda: rig.overflows and rig.fake.rescans)
        assert rig.overflows[0] is None  # OVERFLOW for every scope at once
        assert rig.fake.rescans[0] is None
        status = rig.source.status()
        assert status.overflows >= 1 and status.lost >= 1
        # Still working afterwards.
        touch(ext4_dir / "after")
        await until(lambda: str(ext4_dir / "after") in rig.fake.checked)


async def test_a_synthetic_overflow_event_takes_the_same_path(ext4_dir: Path) -> None:
    async with running(ext4_dir) as rig:
        overflow = wire.parse_events(wire.METADATA.pack(24, 3, 0, 24, wire.FAN_Q_OVERFLOW, -1, 0))
        rig.source.handle(overflow.events)
        assert rig.overflows == [None] and rig.fake.rescans == [None]
        assert rig.source.status().overflows == 1


async def test_scopes_are_refcounted_and_the_last_one_unmarks(ext4_dir: Path) -> None:
    (ext4_dir / "sub").mkdir()
    before = open_fds()
    async with running(ext4_dir, ext4_dir / "sub") as rig:
        source = rig.source
        assert source.marks == 1  # two scopes, one filesystem
        source.add_scope(str(ext4_dir))
        source.remove_scope(str(ext4_dir))
        touch(ext4_dir / "still")
        await until(lambda: str(ext4_dir / "still") in rig.fake.checked)
        source.remove_scope(str(ext4_dir))
        touch(ext4_dir / "sub" / "kept")  # the nested scope stays
        await until(lambda: str(ext4_dir / "sub" / "kept") in rig.fake.checked)
        touch(ext4_dir / "now-outside")
        await barrier(rig, ext4_dir / "sub")  # read before ext4_dir is a scope again
        source.remove_scope(str(ext4_dir / "sub"))
        assert source.marks == 0
        touch(ext4_dir / "sub" / "late")
        source.remove_scope(str(ext4_dir / "sub"))  # one remove too many is harmless
        await source.introduce(str(ext4_dir), NoIntro())  # not a scope: returns at once
        source.add_scope(str(ext4_dir))  # marked again while running
        touch(ext4_dir / "again")
        await until(lambda: str(ext4_dir / "again") in rig.fake.checked)
    assert open_fds() == before
    assert not {str(ext4_dir / "sub" / "late"), str(ext4_dir / "now-outside")} & set(
        rig.fake.checked
    )


async def test_scopes_added_before_run_are_marked_when_it_starts(ext4_dir: Path) -> None:
    sink = recording_sink([])
    fake = FakeChecker()
    sink.attach(fake)
    source = FanotifySource(sink)
    source.add_scope(str(ext4_dir))
    async with anyio.create_task_group() as tg:
        tg.start_soon(source.run)
        with anyio.fail_after(5):
            await source.introduce(str(ext4_dir), NoIntro())
        assert source.marks == 1
        touch(ext4_dir / "f")
        await until(lambda: fake.checked)
        tg.cancel_scope.cancel()
    assert source.marks == 0


_UNPRIVILEGED = """
import os, sys
import anyio
import anyio._backends._asyncio  # loaded lazily otherwise: after the drop, too late
from aioduet._paths import PathIndex
from aioduet.errors import SourceUnavailable
from aioduet.sources import Sink
from aioduet.sources.fanotify import FanotifySource
from aioduet.store import Store

if sys.argv[1] == "nobody":
    # Drop to nobody after the imports: the interpreter's packages lie under /root (0700).
    os.setgroups([])
    os.setresgid(65534, 65534, 65534)
    os.setresuid(65534, 65534, 65534)
store = Store(8, relevance=lambda key, slot: True, notify=lambda slots: None)
source = FanotifySource(Sink(store, PathIndex()))
source.add_scope(sys.argv[2])

try:
    anyio.run(source.run)
except SourceUnavailable as exc:
    print(exc.errno, exc.strerror)
    sys.exit(3)
"""


@pytest.mark.parametrize(
    ("who", "prefix", "expected"),
    [
        ("nobody", [], "running as uid 65534"),
        # uid 0 without capabilities (a container that drops them).
        ("root", ["setpriv", "--bounding-set=-all", "--inh-caps=-all"], "running as root without"),
    ],
)
def test_without_privilege_run_raises_source_unavailable(
    ext4_dir: Path, who: str, prefix: list[str], expected: str
) -> None:
    ext4_dir.chmod(0o755)
    result = subprocess.run(
        [*prefix, sys.executable, "-c", textwrap.dedent(_UNPRIVILEGED), who, str(ext4_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.startswith("1 fanotify needs root"), result.stdout
    assert expected in result.stdout and "CAP_SYS_ADMIN" in result.stdout
