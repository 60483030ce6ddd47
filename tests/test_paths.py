"""Tests of aioduet._paths: whole-component scope checks and the inode-to-path index."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aioduet._paths import Exclusions, PathHints, PathIndex, is_under, normalize_root

# Short components over a tiny alphabet, so that one path is often a string prefix of another.
components = st.text(alphabet="ab.", min_size=1, max_size=3).filter(lambda c: c not in {".", ".."})


def absolute(parts: list[str]) -> str:
    return "/" + "/".join(parts)


paths = st.lists(components, max_size=4).map(absolute)


def oracle(path: str, root: str) -> bool:
    p, r = PurePosixPath(path).parts, PurePosixPath(root).parts
    return p[: len(r)] == r


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("/d/a", "/d/ab", False),
        ("/d/ab", "/d/a", False),
        ("/d/ab/x", "/d/a", False),
        ("/d/a/b", "/d/a", True),
        ("/d/a", "/d/a", True),
        ("/d", "/d/a", False),
        ("/", "/", True),
        ("/x", "/", True),
        ("/x/y/z", "/", True),
        ("/", "/d", False),
        ("/data/a", "/data/ab", False),
        ("/data/ab", "/data", True),
        ("/data.old/x", "/data", False),
        ("/d/a.b", "/d/a", False),
    ],
)
def test_is_under_examples(path: str, root: str, expected: bool) -> None:
    assert is_under(path, root) is expected
    assert oracle(path, root) is expected


@given(paths, paths)
def test_is_under_matches_component_oracle(path: str, root: str) -> None:
    assert is_under(path, root) == oracle(path, root)


@given(paths, st.lists(components, max_size=3), st.text(alphabet="ab", max_size=2))
def test_is_under_descendants_and_string_prefix_siblings(
    root: str, below: list[str], suffix: str
) -> None:
    # Descendants of root are under it; root with a suffix glued to its last component is not.
    child = root.rstrip("/") + "".join("/" + c for c in below) or "/"
    assert is_under(child, root)
    if root != "/" and suffix:
        sibling = root + suffix
        assert not is_under(sibling, root)
        assert is_under(sibling, root) == oracle(sibling, root)


def test_normalize_root_resolves_symlinks_and_trailing_slash(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    expected = os.path.realpath(real)
    assert normalize_root(str(real) + "/") == expected
    assert normalize_root(link) == expected
    assert normalize_root(str(link) + "/./") == expected
    assert not normalize_root(real).endswith("/")
    assert normalize_root("/") == "/"


# -- PathIndex -----------------------------------------------------------------------------


def test_add_and_rename_with_a_single_link() -> None:
    index = PathIndex()
    assert len(index) == 0
    assert index.add(1, 10, "/d/a") is True
    assert index.add(1, 10, "/d/a") is False  # known already
    assert index.paths(1, 10) == ("/d/a",)
    assert index.add(1, 10, "/d/b") is True  # nlink 1: a rename replaces
    assert index.paths(1, 10) == ("/d/b",)
    assert index.under(1, 10, "/d") is True
    assert index.add(1, 10, "/e/b", nlink=1) is True
    assert index.paths(1, 10) == ("/e/b",)
    assert index.under(1, 10, "/d") is False
    assert len(index) == 1


def test_hard_links_accumulate() -> None:
    index = PathIndex()
    index.add(1, 10, "/d/a", nlink=2)
    assert index.add(1, 10, "/e/b", nlink=2) is True
    assert index.paths(1, 10) == ("/d/a", "/e/b")
    assert index.add(1, 10, "/d/a", nlink=2) is False
    assert index.add(1, 10, "/e/b", nlink=3) is False
    assert index.add(1, 10, "/f/c", nlink=3) is True
    assert index.paths(1, 10) == ("/d/a", "/e/b", "/f/c")
    assert index.under(1, 10, "/e") is True
    assert index.under(1, 10, "/f/c") is True
    assert index.under(1, 10, "/g") is False
    assert len(index) == 1
    # Back to one link: a new path replaces the whole set.
    assert index.add(1, 10, "/g/d", nlink=1) is True
    assert index.paths(1, 10) == ("/g/d",)


def test_inodes_are_keyed_by_device_and_number() -> None:
    index = PathIndex()
    index.add(1, 10, "/d/a")
    index.add(2, 10, "/mnt/a")
    index.add(1, 11, "/d/b")
    assert len(index) == 3
    assert index.paths(1, 10) == ("/d/a",)
    assert index.paths(2, 10) == ("/mnt/a",)
    assert index.under(2, 10, "/d") is False


def test_discard_one_path() -> None:
    index = PathIndex()
    for path in ("/d/a", "/d/b", "/d/c"):
        index.add(1, 10, path, nlink=3)
    index.discard(1, 10, "/d/b")
    assert index.paths(1, 10) == ("/d/a", "/d/c")
    index.discard(1, 10, "/d/unknown")
    assert index.paths(1, 10) == ("/d/a", "/d/c")
    index.discard(1, 10, "/d/a")
    assert index.paths(1, 10) == ("/d/c",)
    # Adding the same remaining path again is no change.
    assert index.add(1, 10, "/d/c", nlink=1) is False
    index.discard(1, 10, "/d/c")
    assert index.paths(1, 10) == ()
    assert index.under(1, 10, "/") is None
    assert len(index) == 0


def test_discard_single_path_only_when_it_matches() -> None:
    index = PathIndex()
    index.add(1, 10, "/d/a")
    index.discard(1, 10, "/d/other")
    assert index.paths(1, 10) == ("/d/a",)
    index.discard(1, 10, "/d/a")
    assert len(index) == 0


def test_discard_all_paths() -> None:
    index = PathIndex()
    index.add(1, 10, "/d/a", nlink=2)
    index.add(1, 10, "/e/a", nlink=2)
    index.add(1, 11, "/d/z")
    index.discard(1, 10)
    assert index.paths(1, 10) == ()
    assert index.under(1, 10, "/d") is None
    assert index.paths(1, 11) == ("/d/z",)
    index.discard(9, 99)  # unknown: nothing happens
    index.discard(9, 99, "/x")
    assert len(index) == 1


def test_under_unknown_is_none_and_compares_components() -> None:
    index = PathIndex()
    assert index.under(1, 10, "/d") is None
    index.add(1, 10, "/d/ab/f")
    assert index.under(1, 10, "/d/a") is False
    assert index.under(1, 10, "/d/ab") is True
    assert index.under(1, 10, "/") is True
    index.add(1, 12, "/d/a", nlink=2)
    index.add(1, 12, "/d/abc", nlink=2)
    assert index.under(1, 12, "/d/ab") is False
    assert index.under(1, 12, "/d/abc") is True


@given(st.lists(st.tuples(st.sampled_from(["add", "discard", "discard_all"]), paths), max_size=30))
def test_hard_link_index_matches_set_model(operations: list[tuple[str, str]]) -> None:
    index = PathIndex()
    model: set[str] = set()
    for operation, path in operations:
        if operation == "add":
            changed = index.add(7, 1, path, nlink=2)
            assert changed == (path not in model)
            model.add(path)
        elif operation == "discard":
            index.discard(7, 1, path)
            model.discard(path)
        else:
            index.discard(7, 1)
            model.clear()
        assert index.paths(7, 1) == tuple(sorted(model))
        assert len(index) == (1 if model else 0)
        if model:
            assert index.under(7, 1, "/a") == any(oracle(p, "/a") for p in model)
        else:
            assert index.under(7, 1, "/a") is None


def test_path_hints_are_taken_once() -> None:
    hints = PathHints()
    hints.add(1, 10, ("/d/a", 7, 100))
    hints.add(2, 10, ("/e/a", 8, 200))  # another device, the same number
    assert hints.take(1, 10) == ("/d/a", 7, 100)
    assert hints.take(1, 10) is None
    assert hints.take(2, 10) == ("/e/a", 8, 200)
    assert len(hints) == 0


def test_path_hints_keep_the_newest_within_the_limit() -> None:
    hints = PathHints(limit=3)
    for ino in range(5):
        hints.add(1, ino, (f"/d/{ino}", 0, 0))
    hints.add(1, 2, ("/d/moved", 0, 0))  # seen again: now the newest
    hints.add(1, 9, ("/d/9", 0, 0))
    assert len(hints) == 3
    taken = [hints.take(1, ino) for ino in (0, 1, 3, 4, 2, 9)]
    assert [None if hint is None else hint[0] for hint in taken] == [
        None,
        None,
        None,
        "/d/4",
        "/d/moved",
        "/d/9",
    ]


def test_path_hints_need_a_positive_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        PathHints(limit=0)


def test_remembered_answers_equal_fresh_ones() -> None:
    exclusions = Exclusions(("*.tmp", "/data/cache"))
    paths = ["/data/a.tmp", "/data/cache", "/data/b", "/data/a.tmp", "/other/x"]
    assert [exclusions.remembered(p) for p in paths] == [exclusions(p) for p in paths]
    assert [exclusions.remembered(p) for p in paths] == [True, True, False, True, False]
    assert Exclusions().remembered("/data/a.tmp") is False
