"""Fixtures for the example tools: a small mixed tree on ext4, and ways to run the tools."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"
TIMEOUT = 60  # seconds per run of a tool; a run here takes about one

#: Regular files of the tree (relative path -> size). 1.5 MiB crosses a 1 MiB read.
FILES = {
    "a/b/deep.bin": 100_000,
    "a/one.bin": 1_572_864 + 123,
    "a/two.bin": 65_536,
    "a.txt": 1,
    "empty.dat": 0,
    "name with spaces é.bin": 4096,
    "z/zz/z.bin": 300_000,
}
#: A second name of a/one.bin.
HARDLINK = "z/hardlink.bin"


def evict(path: Path) -> None:
    """Write back and drop a file's pages from the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def tree(ext4_dir: Path) -> Path:
    """SRC: nested directories, an empty one, a symlink, a hard link, odd names and modes.

    Half of the files are evicted, the rest cached, so cached_first has both kinds to pick.
    """
    src = ext4_dir / "src"
    for number, (rel, size) in enumerate(sorted(FILES.items())):
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        if number % 2:
            evict(path)
    (src / "empty").mkdir()
    (src / "a" / "script.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (src / "a" / "script.sh").chmod(0o751)
    (src / "a" / "b" / "deep.bin").chmod(0o600)
    (src / "link").symlink_to("a.txt")
    os.link(src / "a" / "one.bin", src / HARDLINK)
    return src


class Tools:
    """Running the tools and reading what they wrote (the ``tools`` fixture)."""

    files = FILES
    hardlink = HARDLINK
    examples = EXAMPLES

    @staticmethod
    def regular_files(src: Path) -> list[str]:
        """Relative paths of the regular files under src (each name of a hard link)."""
        return sorted(
            os.path.relpath(os.path.join(d, name), src)
            for d, _, names in os.walk(src)
            for name in names
            if os.path.isfile(os.path.join(d, name)) and not os.path.islink(os.path.join(d, name))
        )

    @staticmethod
    def run(
        script: str, *args: str | Path, prefix: tuple[str, ...] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run examples/SCRIPT as a program; ``prefix`` is a command to run it under."""
        return subprocess.run(
            [*prefix, sys.executable, "-W", "error", str(EXAMPLES / script), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    @staticmethod
    def report(stdout: str) -> dict[str, Any]:
        """The final JSON line of a run, checked for its keys and for being the only line."""
        lines = stdout.splitlines()
        assert len(lines) == 1, stdout
        result: dict[str, Any] = json.loads(lines[0])
        assert set(result) == {"files", "bytes", "seconds", "read_bytes"}
        return result

    @staticmethod
    def listed(path: Path) -> list[str]:
        """The lines of a --list file."""
        return path.read_text(encoding="utf-8").splitlines()

    @staticmethod
    def evict(path: Path) -> None:
        evict(path)


@pytest.fixture
def tools() -> Tools:
    return Tools()


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import an example tool in this process (examples/ on sys.path, as when it runs)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name: str) -> ModuleType:
        return importlib.import_module(name)

    return load


@pytest.fixture
def run_changing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    example: Callable[[str], ModuleType],
) -> Callable[[str, list[str], Callable[[], None]], tuple[int, str, str]]:
    """Run a tool in this process, calling ``change`` right after its walk: the files that
    ``change`` deletes or modifies are then changed during the run, deterministically.
    Returns the exit code, stdout and stderr."""
    tool = example("_tool")
    original = tool.walk

    def run(name: str, argv: list[str], change: Callable[[], None]) -> tuple[int, str, str]:
        def walk(root: str, exclude: Any = ()) -> Any:
            found = original(root, exclude)
            change()
            return found

        monkeypatch.setattr(tool, "walk", walk)
        code: int = example(name).main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return run
