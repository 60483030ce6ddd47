"""The command line, run as a user would: in a subprocess, with signals."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from pagecache import read_pages, write_clean

import aioduet
from aioduet import Event
from aioduet._cli import parse_mask

JSON_KEYS = {"dev", "ino", "gen", "index", "count", "state", "path"}


def test_parse_mask_accepts_names_in_any_case_and_separator() -> None:
    assert parse_mask("exists,MODIFIED") == Event.EXISTS | Event.MODIFIED
    assert parse_mask("added|removed") == Event.ADDED | Event.REMOVED
    with pytest.raises(argparse.ArgumentTypeError, match="unknown event 'bogus'"):
        parse_mask("bogus")
    with pytest.raises(argparse.ArgumentTypeError, match="EXISTS already covers"):
        parse_mask("exists,added")
    with pytest.raises(argparse.ArgumentTypeError, match="empty"):
        parse_mask(",")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioduet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_shows_every_kind_of_item(ext4_dir: Path) -> None:
    result = run_cli("demo", str(ext4_dir), "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(set(line) == JSON_KEYS for line in lines)
    seen = {name for line in lines for name in line["state"]}
    assert {"ADDED", "DIRTY", "FLUSHED", "REMOVED"} <= seen
    assert list(ext4_dir.iterdir()) == []  # the demo cleans up after itself


def test_bad_arguments_give_one_clear_line_and_exit_2(ext4_dir: Path) -> None:
    missing = run_cli("watch", str(ext4_dir / "missing"))
    assert missing.returncode == 2
    assert "no such directory" in missing.stderr.splitlines()[-1]
    mixed = run_cli("watch", str(ext4_dir), "--mask", "modified,dirty")
    assert mixed.returncode == 2
    assert "MODIFIED already covers" in mixed.stderr.splitlines()[-1]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_watch_streams_items_with_paths_and_exits_0_on_ctrl_c(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "watched", 8)
    command = [sys.executable, "-m", "aioduet", "watch", str(ext4_dir), "--json"]
    command += ["--interval", "0.05", "--mask", "added"]
    async with await anyio.open_process(command) as process:
        assert process.stdout is not None and process.stderr is not None
        with anyio.fail_after(30):
            banner = await process.stderr.receive()
            assert b"watching" in banner
            read_pages(data)
            buffer = b""
            while str(data).encode() not in buffer:
                buffer += await process.stdout.receive()
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
    line = next(line for line in buffer.decode().splitlines() if str(data) in line)
    item = json.loads(line)
    assert item["state"] == ["ADDED"]
    assert item["path"] == str(data)
    assert item["index"] == 0 and item["count"] == 8


def test_watch_takes_the_budget_exclusions_and_sources(ext4_dir: Path) -> None:
    kept = write_clean(ext4_dir / "kept", 2)
    skipped = write_clean(ext4_dir / "skipped.tmp", 2)
    read_pages(kept)
    read_pages(skipped)
    result = run_cli(
        *("watch", str(ext4_dir), "--json", "--duration", "1"),
        *("--budget", "100", "--exclude", "*.tmp", "--sources", "inotify,residency"),
    )
    assert result.returncode == 0, result.stderr
    paths = {json.loads(line)["path"] for line in result.stdout.splitlines()}
    assert paths == {str(kept)}
    small = run_cli("watch", str(ext4_dir), "--budget", "3")
    assert small.returncode == 2
    assert "at least 4" in small.stderr.splitlines()[-1]
    alone = run_cli("watch", str(ext4_dir), "--sources", "inotify", "--duration", "1")
    assert alone.returncode != 0
    assert "add 'residency'" in alone.stderr.splitlines()[-1]


def test_version_is_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aioduet", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"aioduet {aioduet.__version__}\n"
    assert importlib.metadata.version("aioduet") == aioduet.__version__
