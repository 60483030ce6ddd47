"""examples/dummy_task.py: items of a file read while it runs."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Tools  # tests/examples/conftest.py

pytestmark = pytest.mark.kernel

WAIT = 30.0  # seconds at most for the task to be ready, or an item to come


def start(tools: Tools, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", str(tools.examples / "dummy_task.py"), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(stream: IO[str], found: Callable[[str], bool], seen: list[str]) -> str:
    """Read lines (appended to ``seen``) until one is ``found``; fail after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not selector.select(left):
                break
            line = stream.readline()  # the tool prints whole lines and flushes
            if not line:
                break
            seen.append(line)
            if found(line):
                return line
    raise AssertionError(f"not found within {WAIT} s; read: {seen}")


def cold_file(directory: Path, tools: Tools) -> Path:
    """A written-back file whose pages are all evicted."""
    path = directory / "data.bin"
    path.write_bytes(os.urandom(256 * 1024))
    tools.evict(path)
    return path


def test_prints_the_items_of_a_file_read_during_its_run(ext4_dir: Path, tools: Tools) -> None:
    path = cold_file(ext4_dir, tools)
    # --duration is long enough for a loaded machine; the test ends it once the item came
    process = start(tools, ext4_dir, "--duration", "25", "--json", "--get-path")
    try:
        assert process.stderr is not None and process.stdout is not None
        read_until(process.stderr, lambda line: line.endswith("ready\n"), [])
        path.read_bytes()  # 64 pages come into the cache
        ino = path.stat().st_ino
        seen: list[str] = []
        read_until(process.stdout, lambda line: json.loads(line)["ino"] == ino, seen)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=WAIT)
    finally:
        process.kill()
    assert process.returncode == 0, err
    items = [json.loads(line) for line in [*seen, *out.splitlines()]]
    ours = [item for item in items if item["ino"] == ino]
    keys = {"dev", "ino", "gen", "index", "count", "state", "path"}
    assert all(set(item) == keys for item in ours)
    assert {item["path"] for item in ours} == {str(path)}
    added = [item for item in ours if "ADDED" in item["state"]]
    assert added, items


def test_state_based_fetch_period_and_ctrl_c(ext4_dir: Path, tools: Tools) -> None:
    path = cold_file(ext4_dir, tools)
    process = start(tools, ext4_dir, "--state", "--period", "0.05", "--get-path")
    seen: list[str] = []
    try:
        assert process.stderr is not None and process.stdout is not None
        read_until(process.stderr, lambda line: line.endswith("ready\n"), seen)
        assert "for MODIFIED|EXISTS" in "".join(seen)
        path.read_bytes()
        line = read_until(process.stdout, lambda line: line.rstrip().endswith(str(path)), [])
        assert line.startswith("ADDED ")
        assert f"ino {path.stat().st_ino} " in line
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "items in" in err


def test_duration_ends_the_run(ext4_dir: Path, tools: Tools) -> None:
    done = tools.run("dummy_task.py", ext4_dir, "--duration", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "dummy_task.py: 0 items in 0 fetches"


def test_bad_input(ext4_dir: Path, tools: Tools) -> None:
    done = tools.run("dummy_task.py", ext4_dir / "nowhere")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.splitlines() == [
        f"dummy_task.py: error: {ext4_dir / 'nowhere'}: not an existing directory"
    ]
    done = tools.run("dummy_task.py", ext4_dir, "--period", "-1")
    assert done.returncode == 2
    done = tools.run("dummy_task.py", "--help")
    assert done.returncode == 0
    for option in ("--state", "--get-path", "--period", "--duration", "--json", "PATH"):
        assert option in done.stdout
