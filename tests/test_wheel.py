"""The package as a user gets it: an sdist and a wheel built, the wheel installed into a fresh
virtual environment, and the command line run from there (not from this checkout)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import ROOT
from pagecache import read_pages, write_clean

import aioduet


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of this checkout (the build backend installed with the tests)."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtual environment with the wheel (and its dependencies) installed."""
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    (wheel,) = dist.glob("aioduet-*.whl")
    done = subprocess.run(
        [str(where / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    yield where


def run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "aioduet"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": ""},
    )


def test_the_sdist_and_the_wheel_hold_the_package(dist: Path) -> None:
    version = aioduet.__version__
    (wheel,) = dist.glob(f"aioduet-{version}-py3-none-any.whl")
    (sdist,) = dist.glob(f"aioduet-{version}.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"aioduet/__init__.py", "aioduet/py.typed", "aioduet/dask/__init__.py"} <= names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)
    entry_points = zipfile.ZipFile(wheel).read(f"aioduet-{version}.dist-info/entry_points.txt")
    assert b"aioduet = aioduet._cli:main" in entry_points
    with tarfile.open(sdist) as archive:
        assert f"aioduet-{version}/aioduet/_framework.py" in archive.getnames()


def test_the_installed_command_runs_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import aioduet; print(aioduet.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert Path(where.stdout.strip()).is_relative_to(venv)  # not this checkout
    helped = run(venv, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "watch" in helped.stdout, helped.stderr
    versioned = run(venv, "--version", cwd=tmp_path)
    assert versioned.stdout == f"aioduet {aioduet.__version__}\n"
    doctor = run(venv, "doctor", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "cachestat" in doctor.stdout


@pytest.mark.kernel
def test_the_installed_watch_streams_items(venv: Path, ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "watched", 4)
    command = [str(venv / "bin" / "aioduet"), "watch", str(ext4_dir), "--json", "--mask", "added"]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ext4_dir,
        env={**os.environ, "PYTHONPATH": ""},
    ) as process:  # closes the pipes on the way out
        watchdog = threading.Timer(60, process.kill)  # a silent watch ends the reads below
        watchdog.start()
        try:
            assert process.stderr is not None and process.stdout is not None
            banner = process.stderr.readline()  # said once the task is registered
            assert "watching" in banner, banner
            read_pages(data)
            line = process.stdout.readline()  # the first item: the read above
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
    item = json.loads(line)
    assert item["path"] == str(data) and item["state"] == ["ADDED"]
