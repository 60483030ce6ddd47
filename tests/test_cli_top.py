"""``aioduet top`` as a user runs it: snapshots on a pipe, the live table on a terminal (a
pseudo-terminal here) that ``q`` and Ctrl-C quit with the terminal restored, errors on one line,
and the same table over the daemon."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import daemon_process, run_aioduet
from pagecache import cached, read_pages, write_clean

from aioduet import _kernel
from aioduet._cli import build_parser
from aioduet._units import format_size

pytestmark = pytest.mark.kernel


def test_options_and_defaults(ext4_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ext4_dir)
    args = build_parser().parse_args(["top"])
    assert (args.path, args.refresh, args.rows, args.iterations) == (str(ext4_dir), 1.0, 10, None)
    args = build_parser().parse_args(["top", ".", "--once", "--rows", "3", "--refresh", "0.5"])
    assert (args.iterations, args.rows, args.refresh) == (1, 3, 0.5)


def test_once_prints_the_file_just_read_at_the_top(ext4_dir: Path) -> None:
    write_clean(ext4_dir / "cold", 32)
    data = write_clean(ext4_dir / "hot", 24)
    # The kernel's DAMON reclaim may evict pages of "hot" while top starts: then the picture
    # is of another state than the one asserted, and the run is repeated (three at most).
    for _ in range(3):
        assert read_pages(data) == 24  # cached before top starts: its registration scan sees it
        result = run_aioduet("top", str(ext4_dir), "--once", "--embedded", "--interval", "0.1")
        if cached(data) == 24:
            break
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    title = lines.index(next(line for line in lines if line.strip() == "most cached"))
    first_row = lines[title + 4]
    assert first_row.split("│")[1].strip() == "hot"
    assert format_size(24 * _kernel.PAGE_SIZE) in first_row and "100%" in first_row
    assert result.stdout.count("aioduet top ") == 1  # one snapshot


def test_iterations_print_that_many_snapshots(ext4_dir: Path) -> None:
    result = run_aioduet(
        "top", str(ext4_dir), "--iterations", "2", "--refresh", "0.1", "--embedded"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"aioduet top {ext4_dir}") == 2


def test_missing_path_is_one_clear_error(ext4_dir: Path) -> None:
    missing = ext4_dir / "missing"
    result = run_aioduet("top", str(missing))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"aioduet top: error: argument PATH: no such directory: {str(missing)!r}"
    )
    afile = write_clean(ext4_dir / "file", 1)
    result = run_aioduet("top", str(afile))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(f"{str(afile)!r} is not a directory")


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--refresh", "0"], "argument --refresh: must be positive, not 0"),
        (["--refresh", "soon"], "argument --refresh: not a number: 'soon'"),
        (["--rows", "0"], "argument --rows: must be at least 1, not 0"),
        (["--once", "--iterations", "2"], "not allowed with argument --once"),
    ],
)
def test_bad_options_are_rejected(ext4_dir: Path, option: list[str], message: str) -> None:
    result = run_aioduet("top", str(ext4_dir), *option)
    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]


@pytest.fixture
def daemon_socket(ext4_dir: Path) -> Iterator[Path]:
    path = ext4_dir / "run" / "d.sock"
    with daemon_process(path):
        yield path


def test_once_over_the_daemon(daemon_socket: Path, ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data" / "viadaemon", 8)
    read_pages(data)
    result = run_aioduet("top", str(data.parent), "--once", "--connect", str(daemon_socket))
    assert result.returncode == 0, result.stderr
    assert f"using the aioduet daemon at {daemon_socket}" in result.stderr
    assert "viadaemon" in result.stdout


class Terminal:
    """``aioduet top`` on a pseudo-terminal of 40x120 that is its controlling terminal;
    ``drawn`` is set once the output shows the table and the text ``drawn``."""

    def __init__(self, *args: str, drawn: bytes) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.output = bytearray()
        self.marker = drawn
        self.drawn = threading.Event()
        self.stop = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aioduet", "top", *args],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env={**os.environ, "TERM": "xterm"},
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509 - only an ioctl
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:
                    return
                if b"most cached" in self.output and self.marker in self.output:
                    self.drawn.set()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop.set()
        self.reader.join(5)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal(ext4_dir: Path) -> Iterator[Terminal]:
    data = write_clean(ext4_dir / "shown", 4)
    read_pages(data)
    term = Terminal(
        str(ext4_dir), "--embedded", "--interval", "0.1", "--refresh", "0.2", drawn=b"shown"
    )
    try:
        yield term
    finally:
        term.close()


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_the_live_table_quits_on_a_key_and_restores_the_terminal(
    terminal: Terminal, key: bytes
) -> None:
    assert terminal.drawn.wait(30), terminal.output.decode(errors="replace")
    live = termios.tcgetattr(terminal.slave)
    assert not live[3] & (termios.ICANON | termios.ECHO)  # cbreak while it runs
    os.write(terminal.master, key)
    assert terminal.process.wait(timeout=10) == 0, terminal.output.decode(errors="replace")
    assert termios.tcgetattr(terminal.slave) == terminal.before
    assert b"\x1b[?1049l" in terminal.output  # left the alternate screen
    assert b"Traceback" not in terminal.output
