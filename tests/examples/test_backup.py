"""examples/backup.py: a tar of SRC, every file once, with and without aioduet."""

from __future__ import annotations

import filecmp
import os
import re
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Tools  # tests/examples/conftest.py

pytestmark = pytest.mark.kernel


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes | str | None]]:
    """Every entry under root: kind, permission bits, contents (file) or target (symlink)."""
    entries: dict[str, tuple[str, int, bytes | str | None]] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                entries[rel] = ("dir", mode, None)
            else:
                entries[rel] = ("file", mode, Path(path).read_bytes())
    return entries


def extract(archive: Path, into: Path) -> None:
    into.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(into)], check=True)


@pytest.mark.parametrize("mode", ["--no-duet", "--sources=auto"])
def test_round_trip(mode: str, tree: Path, ext4_dir: Path, tools: Tools) -> None:
    archive, listing = ext4_dir / "backup.tar", ext4_dir / "list"
    done = tools.run("backup.py", tree, archive, mode, "--list", listing)
    assert done.returncode == 0, done.stderr
    result = tools.report(done.stdout)

    processed = tools.listed(listing)
    assert sorted(processed) == tools.regular_files(tree)  # every file exactly once
    assert result["files"] == len(processed)
    # the hard link's second name is stored as a link, without reading its data again
    assert result["bytes"] == sum(tools.files.values()) + len(b"#!/bin/sh\necho hi\n")
    assert "did not offer" not in done.stderr
    if mode == "--no-duet":
        assert processed == sorted(processed, key=lambda rel: rel.split("/"))  # path order
    else:  # half the files are cached (the tree fixture): cached_first picked some for that
        picked = re.search(r"; \d+ cached when picked, (\d+) of them ahead", done.stderr)
        assert picked is not None and int(picked[1]) >= 1, done.stderr

    restored = ext4_dir / "restored"
    extract(archive, restored)
    assert snapshot(restored) == snapshot(tree)
    assert (restored / "empty").is_dir()
    assert os.path.samefile(restored / "a" / "one.bin", restored / tools.hardlink)


def test_missing_source(ext4_dir: Path, tools: Tools) -> None:
    done = tools.run("backup.py", ext4_dir / "nowhere", ext4_dir / "out.tar")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"backup.py: error: {ext4_dir / 'nowhere'}: No such file or directory"
    ]


def test_unwritable_destination(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    done = tools.run("backup.py", tree, ext4_dir / "no" / "such" / "dir.tar", "--no-duet")
    assert done.returncode == 2
    assert "No such file or directory" in done.stderr


def test_help(tools: Tools) -> None:
    done = tools.run("backup.py", "--help")
    assert done.returncode == 0
    for option in ("--no-duet", "--sources", "--order", "--list", "SRC", "DEST"):
        assert option in done.stdout


def test_unreadable_file_is_skipped(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    # Root reads any file; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it is bound by
    # the mode bits like anyone else (and still owns /root, where the interpreter lives).
    secret = tree / "a" / "secret.bin"
    secret.write_bytes(b"s" * 5000)
    secret.chmod(0)
    caps = "-dac_override,-dac_read_search"
    archive = ext4_dir / "backup.tar"
    done = tools.run(
        "backup.py",
        tree,
        archive,
        "--sources=auto",
        prefix=("setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"),
    )
    assert done.returncode == 3, done.stderr
    assert "a/secret.bin: cannot read: Permission denied; skipped" in done.stderr
    assert tools.report(done.stdout)["files"] == len(tools.regular_files(tree)) - 1

    restored = ext4_dir / "restored"
    extract(archive, restored)
    assert not (restored / "a" / "secret.bin").exists()
    assert filecmp.cmp(restored / "a" / "one.bin", tree / "a" / "one.bin", shallow=False)


@pytest.mark.parametrize("mode", ["--no-duet", "--sources=auto"])
def test_files_deleted_or_grown_during_the_run(
    mode: str,
    tree: Path,
    ext4_dir: Path,
    tools: Tools,
    run_changing: Callable[[str, list[str], Callable[[], None]], tuple[int, str, str]],
) -> None:
    gone, grown = tree / "a" / "two.bin", tree / "z" / "zz" / "z.bin"

    def change() -> None:
        gone.unlink()
        with grown.open("ab") as f:
            f.write(b"more")

    archive = ext4_dir / "backup.tar"
    code, out, err = run_changing("backup", [str(tree), str(archive), mode], change)
    assert code == 0, err  # a deleted file is not an error: it is no longer there to save
    assert "a/two.bin: vanished during the run, skipped" in err
    assert tools.report(out)["files"] == len(tools.regular_files(tree))

    restored = ext4_dir / "restored"
    extract(archive, restored)
    assert snapshot(restored) == snapshot(tree)  # with the grown file's size at open


def test_file_shrinking_while_read_is_padded(
    ext4_dir: Path, example: Callable[[str], ModuleType]
) -> None:
    path = ext4_dir / "shrinks"
    path.write_bytes(b"x" * 3_000_000)
    with path.open("rb", buffering=0) as f:
        exact = example("backup")._Exact(f, 3_000_000)
        first = exact.read(16384)
        os.truncate(path, 2_000_000)
        rest = [exact.read(16384) for _ in range(3_000_000 // 16384)]
        rest.append(exact.read(3_000_000 % 16384))
    data = first + b"".join(rest)
    assert len(data) == 3_000_000  # what the tar header promised
    assert exact.error is not None and exact.read_count < 3_000_000
    assert data[: exact.read_count] == b"x" * exact.read_count
    assert data[exact.read_count :] == bytes(3_000_000 - exact.read_count)
