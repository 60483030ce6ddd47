"""``aioduet daemon``, ``aioduet status`` and ``watch --connect`` as a user runs them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import daemon_process, run_aioduet
from pagecache import read_pages, write_clean

from aioduet._cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


@pytest.fixture
def daemon(ext4_dir: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    path = ext4_dir / "run" / "d.sock"
    with daemon_process(path) as process:
        assert _answers(path)
        yield process, path


def test_status_and_watch_go_through_the_daemon(
    daemon: tuple[subprocess.Popen[str], Path], ext4_dir: Path
) -> None:
    process, path = daemon
    status = run_aioduet("status", "--connect", str(path), "--json")
    assert status.returncode == 0, status.stderr
    listed = json.loads(status.stdout)
    assert listed["daemon"] == str(path) and listed["max_tasks"] == 64
    assert [s["name"] for s in listed["sources"]] == ["inotify", "residency", "writeback"]

    data = write_clean(ext4_dir / "data" / "f", 8)
    read_pages(data)  # cached before the watch starts: its registration scan reports it
    watch = run_aioduet(
        "watch", str(data.parent), "--connect", str(path), "--json", "--duration", "3"
    )
    assert watch.returncode == 0, watch.stderr
    assert f"using the aioduet daemon at {path}" in watch.stderr
    items = [json.loads(line) for line in watch.stdout.splitlines()]
    assert any(item["path"] == str(data) and "ADDED" in item["state"] for item in items)

    process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "SIGTERM: stopping" in err and err.rstrip().endswith("stopped")
    assert not path.exists()  # the daemon removes its socket


def test_environment_socket_is_used_without_connect(
    daemon: tuple[subprocess.Popen[str], Path],
) -> None:
    _process, path = daemon
    env = {**os.environ, "AIODUET_SOCKET": str(path)}
    result = subprocess.run(
        [sys.executable, "-m", "aioduet", "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"daemon at {path}")


def test_connect_without_a_daemon_is_one_clear_error(ext4_dir: Path) -> None:
    result = run_aioduet("status", "--connect", str(ext4_dir / "none.sock"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"aioduet: error: no aioduet daemon answers at {ext4_dir / 'none.sock'}: No such file"
        " or directory (start one with `aioduet daemon`)"
    ]


def test_daemon_options_are_checked() -> None:
    result = run_aioduet("daemon", "--socket-mode", "999")
    assert result.returncode == 2 and "octal" in result.stderr
    result = run_aioduet("daemon", "--tasks-per-uid", "0")
    assert result.returncode == 2 and "at least 1" in result.stderr


def test_the_systemd_unit_starts_a_daemon_with_valid_options() -> None:
    unit = (ROOT / "contrib" / "systemd" / "aioduetd.service").read_text()
    (line,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    program, *arguments = shlex.split(line.removeprefix("ExecStart="))
    assert program.endswith("/aioduetd")
    args = build_parser().parse_args(["daemon", *arguments])
    assert args.socket == "/run/aioduet/aioduet.sock" and args.socket_mode == 0o666
