"""examples/index.py: chunk-hash indexes, the same with and without aioduet."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Tools  # tests/examples/conftest.py

pytestmark = pytest.mark.kernel

CHUNK = 64 * 1024


def test_same_index_with_and_without_aioduet(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    outputs = {}
    for mode in ("--no-duet", "--sources=auto"):
        out, listing = ext4_dir / f"index{mode}", ext4_dir / f"list{mode}"
        done = tools.run("index.py", tree, "--out", out, mode, "--list", listing)
        assert done.returncode == 0, done.stderr
        result = tools.report(done.stdout)
        processed = tools.listed(listing)
        assert sorted(processed) == tools.regular_files(tree)  # every file exactly once
        assert result["files"] == len(processed)
        assert "did not offer" not in done.stderr
        outputs[mode] = out.read_bytes()
    assert outputs["--no-duet"] == outputs["--sources=auto"]

    header, *entries = (json.loads(line) for line in outputs["--no-duet"].splitlines())
    assert header == {
        "format": "aioduet-example-index",
        "version": 1,
        "chunk_size": CHUNK,
        "hash": "sha256",
    }
    paths = [entry["path"] for entry in entries]
    assert paths == sorted(tools.regular_files(tree), key=lambda rel: rel.split("/"))
    for entry in entries:
        data = (tree / entry["path"]).read_bytes()
        chunks = [data[at : at + CHUNK] for at in range(0, len(data), CHUNK)]
        assert entry["size"] == len(data)
        assert entry["chunks"] == [hashlib.sha256(chunk).hexdigest() for chunk in chunks]
    # the hard link's two names share their chunks: what deduplication finds
    by_path = {entry["path"]: entry["chunks"] for entry in entries}
    assert by_path["a/one.bin"] == by_path[tools.hardlink]
    assert len(by_path["a/one.bin"]) == 25  # 1.5 MiB + 123 bytes: 24 full chunks and a tail


def test_orders(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    inodes = {rel: (tree / rel).lstat().st_ino for rel in tools.regular_files(tree)}
    for order in ("inode", "path", "disk", None):
        listing = ext4_dir / f"list-{order}"
        options = [] if order is None else ["--order", order]
        done = tools.run(
            "index.py", tree, "--out", ext4_dir / "i", "--no-duet", "--list", listing, *options
        )
        assert done.returncode == 0, done.stderr
        processed = tools.listed(listing)
        assert sorted(processed) == tools.regular_files(tree)
        if order in ("inode", None):  # inode order is the natural one
            assert [inodes[rel] for rel in processed] == sorted(inodes[rel] for rel in processed)
        elif order == "path":
            assert processed == sorted(processed, key=lambda rel: rel.split("/"))


def test_disk_order_follows_first_extents(tree: Path, example: Callable[[str], ModuleType]) -> None:
    os.sync()  # delayed allocation: a file has no extent on disk before its writeback
    tool = example("_tool")
    walked = tool.walk(str(tree.resolve()))
    order = tool.ordered(walked, "disk", "test")
    offsets = [tool.first_extent(path) for path in order]
    known = [offset for offset in offsets if offset is not None]
    assert known == sorted(known)
    assert len(known) >= 6  # the non-empty files (8 paths, unless inline data keeps tiny ones)
    assert offsets[: len(known)] == known  # files without an extent come last
    assert tool.first_extent(str(tree / "empty.dat")) is None


def test_unreadable_and_missing(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    (tree / "z" / "zz" / "z.bin").chmod(0)
    caps = "-dac_override,-dac_read_search"  # root bound by mode bits (see test_backup.py)
    out = ext4_dir / "index"
    done = tools.run(
        "index.py",
        tree,
        "--out",
        out,
        "--sources=auto",
        prefix=("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"),
    )
    assert done.returncode == 3, done.stderr
    assert "z/zz/z.bin: cannot read: Permission denied; skipped" in done.stderr
    paths = [json.loads(line).get("path") for line in out.read_text().splitlines()[1:]]
    assert "z/zz/z.bin" not in paths
    assert len(paths) == len(tools.regular_files(tree)) - 1

    done = tools.run("index.py", ext4_dir / "nowhere", "--out", out)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"index.py: error: {ext4_dir / 'nowhere'}: No such file or directory\n"

    done = tools.run("index.py", "--help")
    assert done.returncode == 0
    assert "--out" in done.stdout


def test_file_deleted_during_the_run(
    tree: Path,
    ext4_dir: Path,
    tools: Tools,
    run_changing: Callable[[str, list[str], Callable[[], None]], tuple[int, str, str]],
) -> None:
    out = ext4_dir / "index"
    argv = [str(tree), "--out", str(out), "--sources=auto"]
    code, _, err = run_changing("index", argv, (tree / "a" / "one.bin").unlink)
    assert code == 0, err
    assert "a/one.bin: vanished during the run, skipped" in err
    paths = [json.loads(line)["path"] for line in out.read_text().splitlines()[1:]]
    assert paths == sorted(tools.regular_files(tree), key=lambda rel: rel.split("/"))
