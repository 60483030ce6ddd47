"""examples/scrub.py: SHA-256 manifests, created and verified, with and without aioduet."""

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

BOTH = pytest.mark.parametrize("mode", ["--no-duet", "--sources=auto"])


def create(tools: Tools, tree: Path, manifest: Path, *options: str) -> None:
    done = tools.run("scrub.py", tree, "--manifest", manifest, "--create", "--no-duet", *options)
    assert done.returncode == 0, done.stderr


@BOTH
def test_manifest_lists_every_file_once(
    mode: str, tree: Path, ext4_dir: Path, tools: Tools, example: Callable[[str], ModuleType]
) -> None:
    manifest, listing = ext4_dir / "manifest", ext4_dir / "list"
    done = tools.run("scrub.py", tree, "--manifest", manifest, "--create", mode, "--list", listing)
    assert done.returncode == 0, done.stderr
    result = tools.report(done.stdout)
    processed = tools.listed(listing)
    assert sorted(processed) == tools.regular_files(tree)
    assert result["files"] == len(processed)
    assert "did not offer" not in done.stderr

    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [e["path"] for e in entries] == sorted(processed, key=lambda rel: rel.split("/"))
    for entry in entries:
        data = (tree / entry["path"]).read_bytes()
        assert entry == {
            "path": entry["path"],
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    assert result["bytes"] == sum(e["size"] for e in entries)

    if mode == "--no-duet":  # the natural order: on disk
        tool = example("_tool")
        walked = tool.walk(str(tree.resolve()))
        expected = tool.ordered(walked, "disk", "test")
        assert processed == [walked.relative(path) for path in expected]


@BOTH
def test_intact_tree_passes(mode: str, tree: Path, ext4_dir: Path, tools: Tools) -> None:
    manifest = ext4_dir / "manifest"
    create(tools, tree, manifest)
    done = tools.run("scrub.py", tree, "--manifest", manifest, mode)
    assert done.returncode == 0, done.stderr
    assert tools.report(done.stdout)["files"] == len(tools.regular_files(tree))
    count = len(tools.regular_files(tree))
    assert f"verified {count} files: 0 mismatched, 0 missing, 0 new" in done.stderr


@BOTH
def test_corruption_is_detected(mode: str, tree: Path, ext4_dir: Path, tools: Tools) -> None:
    manifest = ext4_dir / "manifest"
    create(tools, tree, manifest)
    victim = tree / "z" / "zz" / "z.bin"
    with victim.open("r+b") as f:  # one flipped byte, same size, same mtime
        f.seek(123_456)
        byte = f.read(1)
        f.seek(123_456)
        f.write(bytes([byte[0] ^ 0xFF]))
    tools.evict(victim)
    done = tools.run("scrub.py", tree, "--manifest", manifest, mode)
    assert done.returncode == 1, done.stderr
    assert "scrub.py: MISMATCH z/zz/z.bin: sha256 " in done.stderr
    assert "1 mismatched, 0 missing, 0 new" in done.stderr
    assert tools.report(done.stdout)["files"] == len(tools.regular_files(tree))


def test_missing_and_new_files(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    manifest = ext4_dir / "manifest"
    create(tools, tree, manifest)
    (tree / "a.txt").unlink()
    (tree / "empty" / "new.txt").write_text("new\n")
    done = tools.run("scrub.py", tree, "--manifest", manifest, "--sources=auto")
    assert done.returncode == 1, done.stderr
    assert "scrub.py: MISSING a.txt" in done.stderr
    assert "scrub.py: NEW empty/new.txt sha256 " in done.stderr
    assert "0 mismatched, 1 missing, 1 new" in done.stderr

    (tree / "a.txt").write_bytes(b"")  # back, but with other contents
    done = tools.run("scrub.py", tree, "--manifest", manifest, "--no-duet")
    assert done.returncode == 1
    assert "MISMATCH a.txt" in done.stderr


def test_new_files_alone_are_not_corruption(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    manifest = ext4_dir / "manifest"
    create(tools, tree, manifest)
    (tree / "later.txt").write_text("later\n")
    done = tools.run("scrub.py", tree, "--manifest", manifest, "--no-duet")
    assert done.returncode == 0, done.stderr
    assert "NEW later.txt" in done.stderr


def test_unreadable_file(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    manifest = ext4_dir / "manifest"
    create(tools, tree, manifest)
    (tree / "a" / "two.bin").chmod(0)
    caps = "-dac_override,-dac_read_search"  # root bound by mode bits (see test_backup.py)
    done = tools.run(
        "scrub.py",
        tree,
        "--manifest",
        manifest,
        "--sources=auto",
        prefix=("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"),
    )
    assert done.returncode == 3, done.stderr  # skipped data, and nothing found corrupt
    assert "a/two.bin: cannot read: Permission denied; skipped" in done.stderr
    assert "0 mismatched, 0 missing, 0 new" in done.stderr


@BOTH
def test_file_deleted_during_the_run_is_missing(
    mode: str,
    tree: Path,
    ext4_dir: Path,
    tools: Tools,
    run_changing: Callable[[str, list[str], Callable[[], None]], tuple[int, str, str]],
) -> None:
    manifest = ext4_dir / "manifest"
    create(tools, tree, manifest)
    argv = [str(tree), "--manifest", str(manifest), mode]
    code, out, err = run_changing("scrub", argv, (tree / "a" / "b" / "deep.bin").unlink)
    assert code == 1, err
    assert "a/b/deep.bin: vanished during the run, skipped" in err
    assert "MISSING a/b/deep.bin" in err
    assert tools.report(out)["files"] == len(tools.regular_files(tree))


def test_bad_input(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    done = tools.run("scrub.py", ext4_dir / "nowhere", "--manifest", ext4_dir / "m")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"scrub.py: error: {ext4_dir / 'nowhere'}: No such file or directory\n"

    done = tools.run("scrub.py", tree, "--manifest", ext4_dir / "absent", "--no-duet")
    assert (done.returncode, done.stdout) == (2, "")
    assert "cannot read the manifest" in done.stderr

    (ext4_dir / "garbage").write_text("not json\n")
    done = tools.run("scrub.py", tree, "--manifest", ext4_dir / "garbage", "--no-duet")
    assert done.returncode == 2
    assert "garbage:1: not a manifest line" in done.stderr

    done = tools.run("scrub.py", tree)  # --manifest is required
    assert done.returncode == 2

    done = tools.run("scrub.py", "--help")
    assert done.returncode == 0
    assert "--create" in done.stdout


def test_manifest_inside_the_tree_is_not_scrubbed(tree: Path, tools: Tools) -> None:
    manifest = tree / "MANIFEST"
    create(tools, tree, manifest)
    assert "MANIFEST" not in manifest.read_text()
    done = tools.run("scrub.py", tree, "--manifest", manifest, "--no-duet")
    assert done.returncode == 0, done.stderr
    assert "0 new" in done.stderr
    assert os.path.exists(manifest)
