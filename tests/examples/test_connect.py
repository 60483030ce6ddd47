"""The tools with ``--connect``: served by one aioduet daemon instead of their own framework."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Tools  # tests/examples/conftest.py

pytestmark = pytest.mark.kernel

#: Each tool's command line after SRC, with ``{out}`` for a file of its own.
COMMANDS = {
    "backup.py": ["{out}"],
    "scrub.py": ["--manifest", "{out}", "--create"],
    "index.py": ["--out", "{out}"],
}


@pytest.fixture
def daemon(ext4_dir: Path) -> Iterator[Path]:
    """A daemon (``--sources auto``, as the tools' default) listening on a fresh socket."""
    path = ext4_dir / "daemon.sock"
    log = ext4_dir / "daemon.stderr"
    with log.open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "aioduet", "daemon", "--socket", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
                break
            assert time.monotonic() < deadline, "the daemon did not listen within 30 s"
            time.sleep(0.05)
        yield path
    finally:
        process.terminate()
        try:
            assert process.wait(10) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def command(tool: str, tree: Path, out: Path, sock: Path, listing: Path) -> list[str]:
    args = [a.format(out=out) for a in COMMANDS[tool]]
    return [str(tree), *args, "--connect", str(sock), "--list", str(listing)]


@pytest.mark.parametrize("tool", sorted(COMMANDS))
def test_every_file_once_through_the_daemon(
    tool: str, tree: Path, ext4_dir: Path, daemon: Path, tools: Tools
) -> None:
    listing = ext4_dir / "list"
    done = tools.run(tool, *command(tool, tree, ext4_dir / "out", daemon, listing))
    assert done.returncode == 0, done.stderr
    result = tools.report(done.stdout)
    processed = tools.listed(listing)
    assert sorted(processed) == tools.regular_files(tree)  # every file exactly once
    assert result["files"] == len(processed)
    assert "did not offer" not in done.stderr  # the daemon's task offered them all
    assert "offered twice" not in done.stderr


def test_three_tools_at_once_share_one_daemon(
    tree: Path, ext4_dir: Path, daemon: Path, tools: Tools
) -> None:
    running = {}
    for tool in COMMANDS:
        argv = command(tool, tree, ext4_dir / f"{tool}.out", daemon, ext4_dir / f"{tool}.list")
        running[tool] = subprocess.Popen(
            [sys.executable, "-W", "error", str(tools.examples / tool), *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for tool, process in running.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        processed = tools.listed(ext4_dir / f"{tool}.list")
        assert sorted(processed) == tools.regular_files(tree), tool
        assert tools.report(out)["files"] == len(processed)
        assert "did not offer" not in err and "offered twice" not in err


def test_no_daemon_is_one_line_and_exit_2(tree: Path, ext4_dir: Path, tools: Tools) -> None:
    nowhere = ext4_dir / "no.sock"
    done = tools.run("index.py", tree, "--out", ext4_dir / "out", "--connect", nowhere)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"index.py: error: --connect {nowhere}: no aioduet daemon answers")


def test_help_mentions_connect(tools: Tools) -> None:
    for tool in COMMANDS:
        assert "--connect [SOCKET]" in tools.run(tool, "--help").stdout
