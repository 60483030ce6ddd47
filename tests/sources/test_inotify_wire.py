"""The inotify wire: record parsing (unit and fuzz), the watch table, the tree walk."""

from __future__ import annotations

import errno
import os
import struct
import warnings
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioduet import _kernel
from aioduet._paths import Exclusions
from aioduet.errors import AioduetError
from aioduet.sources import _inotify_wire as wire


def record(wd: int, mask: int, cookie: int = 0, name: bytes = b"") -> bytes:
    """One record as the kernel writes it: the name NUL-padded to a multiple of 16."""
    padded = b""
    if name:
        size = (len(name) + 1 + 15) // 16 * 16
        padded = name + b"\0" * (size - len(name))
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


def test_constants_match_pyinotify() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pyinotify imports asyncore
        import pyinotify  # noqa: PLC0415 -- only this cross-check needs it

    flags = pyinotify.EventsCodes.ALL_FLAGS
    for name in ("IN_ACCESS", "IN_MODIFY", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_MOVED_FROM"):
        assert getattr(wire, name) == flags[name]
    for name in ("IN_MOVED_TO", "IN_CREATE", "IN_DELETE", "IN_DELETE_SELF", "IN_MOVE_SELF"):
        assert getattr(wire, name) == flags[name]
    for name in ("IN_Q_OVERFLOW", "IN_IGNORED", "IN_ONLYDIR", "IN_DONT_FOLLOW", "IN_ISDIR"):
        assert getattr(wire, name) == flags[name]
    assert flags["IN_EXCL_UNLINK"] == wire.IN_EXCL_UNLINK


def test_parse_records_with_and_without_names() -> None:
    buf = (
        record(1, wire.IN_ACCESS, name=b"a")
        + record(2, wire.IN_MOVED_FROM, 7, b"x" * 16)
        + record(-1, wire.IN_Q_OVERFLOW)
        + record(3, wire.IN_CREATE | wire.IN_ISDIR, name=b"\xffbad")
    )
    assert wire.parse_events(buf) == [
        (1, wire.IN_ACCESS, 0, "a"),
        (2, wire.IN_MOVED_FROM, 7, "x" * 16),
        (-1, wire.IN_Q_OVERFLOW, 0, ""),
        (3, wire.IN_CREATE | wire.IN_ISDIR, 0, os.fsdecode(b"\xffbad")),
    ]
    assert wire.parse_events(b"") == []


@pytest.mark.parametrize("cut", [1, 15, 17, 31])
def test_truncated_input_is_a_clear_error(cut: int) -> None:
    buf = record(1, wire.IN_ACCESS, name=b"name")
    with pytest.raises(wire.InotifyWireError, match="truncated"):
        wire.parse_events(buf + buf[:cut])
    with pytest.raises(wire.InotifyWireError):
        wire.split_events(buf[:cut], set(), [])
    assert issubclass(wire.InotifyWireError, AioduetError)


def test_split_coalesces_plain_hints_and_keeps_the_rest_in_order() -> None:
    buf = (
        record(1, wire.IN_ACCESS, name=b"a")
        + record(1, wire.IN_MODIFY, name=b"a")
        + record(1, wire.IN_DELETE, name=b"b")
        + record(2, wire.IN_CLOSE_WRITE, name=b"a")
        + record(1, wire.IN_ACCESS | wire.IN_ISDIR, name=b"d")
        + record(1, wire.IN_IGNORED)
    )
    hints: set[tuple[int, bytes]] = set()
    others: list[wire.RawEvent] = []
    assert wire.split_events(buf, hints, others) == 6
    assert {(wd, wire.decode_hint(raw)) for wd, raw in hints} == {(1, "a"), (2, "a")}
    assert others == [
        (1, wire.IN_DELETE, 0, "b"),
        (1, wire.IN_ACCESS | wire.IN_ISDIR, 0, "d"),
        (1, wire.IN_IGNORED, 0, ""),
    ]


@given(st.binary(max_size=512))
def test_arbitrary_bytes_give_records_or_a_clean_error(buf: bytes) -> None:
    try:
        events = wire.parse_events(buf)
    except wire.InotifyWireError:
        events = None
    try:
        hints: set[tuple[int, bytes]] = set()
        others: list[wire.RawEvent] = []
        count = wire.split_events(buf, hints, others)
    except wire.InotifyWireError:
        assert events is None
        return
    assert events is not None
    assert count == len(events)
    assert len(others) + len(hints) <= count


@given(
    st.lists(
        st.tuples(
            st.integers(-1, 2**31 - 1),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
            st.binary(max_size=40),
        ),
        max_size=20,
    )
)
def test_well_formed_streams_round_trip(
    items: list[tuple[int, int, int, bytes]],
) -> None:
    names = [name.replace(b"\0", b"") for _, _, _, name in items]
    buf = b"".join(record(wd, m, c, n) for (wd, m, c, _), n in zip(items, names, strict=True))
    expected = [(wd, m, c, os.fsdecode(n)) for (wd, m, c, _), n in zip(items, names, strict=True)]
    assert wire.parse_events(buf) == expected


def test_watch_table_renames_a_directory_and_its_descendants() -> None:
    table = wire.WatchTable()
    table.bind(1, "/r")
    table.bind(2, "/r/a")
    table.bind(3, "/r/a/b")
    table.bind(4, "/r/ab")
    assert table.rename("/r/a", "/r/z") == 2
    assert table.path_of(2) == "/r/z" and table.path_of(3) == "/r/z/b"
    assert table.path_of(4) == "/r/ab"  # whole components only
    assert table.prefixes[3] == "/r/z/b/"
    assert sorted(table.under("/r/z")) == [2, 3]
    assert table.unbind(3) == "/r/z/b"
    assert table.unbind(3) is None
    assert len(table) == 3
    table.bind(5, "/r/z")  # a new directory where the old one's watch has not ended yet
    assert table.wds["/r/z"] == 5 and table.path_of(2) is None
    root = wire.WatchTable()
    root.bind(9, "/")
    assert root.prefixes[9] == "/" and root.path_of(9) == "/"


def test_exclusions_match_paths_and_base_names() -> None:
    excluded = Exclusions(("*.tmp", "/data/cache*"))
    assert excluded("/x/y.tmp")
    assert excluded("/data/cache/f")
    assert not excluded("/data/keep")
    assert not Exclusions()
    assert not Exclusions()("/x.tmp")


@pytest.mark.kernel
def test_watch_tree_stays_on_the_tree_and_tolerates_symlink_loops(ext4_dir: Path) -> None:
    (ext4_dir / "a" / "b" / "c").mkdir(parents=True)
    (ext4_dir / "skip.tmp").mkdir()
    (ext4_dir / "a" / "loop").symlink_to(ext4_dir)
    (ext4_dir / "file").write_text("x")
    fd = wire.inotify_init1()
    try:
        setup = wire.watch_tree(fd, str(ext4_dir), Exclusions(("*.tmp",)))
        paths = sorted(path for _, path in setup.watches)
        assert paths == sorted(str(ext4_dir / p) for p in ("", "a", "a/b", "a/b/c"))
        assert len({wd for wd, _ in setup.watches}) == 4
        assert setup.errors == 0 and not setup.full
        assert wire.rm_watch(fd, setup.watches[0][0])
        assert not wire.rm_watch(fd, setup.watches[0][0])  # already gone: EINVAL
        gone = wire.watch_tree(fd, str(ext4_dir / "missing"))
        assert gone.watches == [] and gone.vanished == 1
        with pytest.raises(NotADirectoryError):
            wire.add_watch(fd, str(ext4_dir / "file"))
    finally:
        os.close(fd)


def test_the_watch_limit_is_reported_clearly(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, path: bytes, mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_kernel, "inotify_add_watch", full)
    setup = wire.watch_tree(-1, str(ext4_dir))
    assert setup.full and setup.errors == 1 and setup.watches == []
    assert "/proc/sys/fs/inotify/max_user_watches" in (setup.last_error or "")
