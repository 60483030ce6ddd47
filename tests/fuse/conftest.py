"""Fixtures for the FUSE tests: the packages they need, and passthrough mounts that always go away.

A mount is served by ``passthrough.py`` in its own process, over a fresh backing directory on
ext4, at a fresh mount point under /tmp. Teardown unmounts it whatever the test did, stops the
server, and fails the test if a mount or a server is left behind.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

SERVER = Path(__file__).with_name("passthrough.py")
PACKAGES = ("fuse3", "libfuse3-dev", "pkg-config")
READY_SECONDS = 20
STOP_SECONDS = 10


def _missing_packages() -> list[str]:
    missing = []
    for package in PACKAGES:
        query = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package],
            capture_output=True,
            text=True,
            check=False,
        )
        if not query.stdout.endswith(" installed"):
            missing.append(package)
    return missing


@pytest.fixture(scope="session")
def fuse_installed(pytestconfig: pytest.Config) -> None:
    """Install Debian's fuse3 (with the headers pyfuse3 builds against) and pyfuse3, if missing.

    .ci/run installs them before the tests; this makes ``pytest tests/fuse`` work anywhere as
    root, and says how long the installation took when it had to run.
    """
    # Outside CI, a machine that cannot mount FUSE skips these; CI runs as root on a kernel
    # with FUSE (.ci/run), where a skip would hide a broken setup: there it fails.
    cannot = pytest.fail if os.environ.get("CI") else pytest.skip
    if os.geteuid() != 0:
        cannot("FUSE tests mount filesystems and read tracefs: they need root")
    if not os.path.exists("/dev/fuse"):
        cannot("no /dev/fuse: the kernel has no FUSE")
    start = time.monotonic()
    missing = _missing_packages()
    if missing:
        install = ["apt-get", "install", "-y", "-qq", *PACKAGES]
        if subprocess.run(install, check=False).returncode != 0:  # stale package lists
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(install, check=True)
    if importlib.util.find_spec("pyfuse3") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "pyfuse3"], check=True)
        importlib.invalidate_caches()
        missing.append("pyfuse3")
    took = time.monotonic() - start
    message = f"FUSE prerequisites: installed {', '.join(missing) or 'nothing'} in {took:.1f} s"
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{message}", flush=True)  # shown even under output capture


def mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point now (``findmnt`` reads /proc/self/mountinfo)."""
    found = subprocess.run(
        ["findmnt", "--noheadings", "--mountpoint", str(path)],
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


@attrs.frozen
class Mount:
    """A passthrough FUSE mount served by a process of its own."""

    root: Path
    """Where it is mounted: the directory that tasks register."""
    backing: Path
    """The ext4 directory it serves."""
    writeback_cache: bool
    """Whether the server asked for FUSE's write-back cache."""
    server: subprocess.Popen[bytes]
    """The passthrough.py process."""


def _wait_ready(server: subprocess.Popen[bytes], log: Path) -> None:
    assert server.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(server.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + READY_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            if selector.select(left):
                line = server.stdout.readline()
                if line.strip() == b"ready":
                    return
                if not line:  # the server exited
                    break
    raise AssertionError(f"passthrough.py not ready in {READY_SECONDS} s: {log.read_text()}")


def _unmount(mount: Mount) -> list[str]:
    """Unmount ``mount`` and stop its server, by escalating steps; returns the steps it took."""
    steps: list[str] = []
    root, server = mount.root, mount.server
    clean = False
    if mounted(root):
        # A clean unmount first: the kernel writes the dirty pages back through the server,
        # which then sees the session end and exits. It fails while a file is still open.
        try:
            done = subprocess.run(
                ["fusermount3", "-u", str(root)],
                capture_output=True,
                check=False,
                timeout=STOP_SECONDS,
            )
        except subprocess.TimeoutExpired:
            steps.append("fusermount3 -u timed out")
        else:
            clean = done.returncode == 0
            if not clean:
                steps.append(f"fusermount3 -u failed: {done.stderr.decode().strip()}")
    try:
        server.wait(STOP_SECONDS if clean else 0.1)
    except subprocess.TimeoutExpired:
        # The server unmounts (lazily) on SIGTERM: the mount goes even with files open.
        steps.append("SIGTERM to the server")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            steps.append("SIGKILL to the server")
            server.kill()
            server.wait(STOP_SECONDS)
    if mounted(root):
        steps.append("umount -l")
        subprocess.run(["umount", "-l", str(root)], check=False, timeout=STOP_SECONDS)
    return steps


@contextlib.contextmanager
def passthrough_mount(*, writeback_cache: bool) -> Iterator[Mount]:
    """Mount a passthrough filesystem over a fresh backing directory; always unmount it."""
    top = Path(tempfile.mkdtemp(prefix="aioduet-fuse-", dir="/tmp"))
    backing, root = top / "backing", top / "mnt"
    backing.mkdir()
    root.mkdir()
    log = top / "server.log"
    command = [sys.executable, str(SERVER), str(backing), str(root)]
    if writeback_cache:
        command.append("--writeback-cache")
    with log.open("wb") as stderr:
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr)
    mount = Mount(root, backing, writeback_cache, server)
    try:
        _wait_ready(server, log)
        assert mounted(root)
        yield mount
    finally:
        steps = _unmount(mount)
        if steps:
            print(f"unmounting {root}: {'; '.join(steps)}")
        assert server.stdout is not None
        server.stdout.close()
        left = mounted(root)
        running = server.poll() is None
        server_log = log.read_text(errors="replace")
        if not left:
            shutil.rmtree(top, ignore_errors=True)
        assert not left, f"{root} is still mounted after: {steps}"
        assert not running, f"passthrough.py (pid {server.pid}) still runs after: {steps}"
        # The server prints nothing but "ready": anything on stderr is a failure it reported.
        assert server.returncode == 0, f"passthrough.py exited {server.returncode}: {server_log}"


@pytest.fixture
def writeback_mount(fuse_installed: None) -> Iterator[Path]:
    """The root of a passthrough mount with FUSE's write-back cache: writes leave dirty pages."""
    with passthrough_mount(writeback_cache=True) as mount:
        yield mount.root


@pytest.fixture
def writethrough_mount(fuse_installed: None) -> Iterator[Path]:
    """The root of a passthrough mount without the write-back cache: writes go to the server."""
    with passthrough_mount(writeback_cache=False) as mount:
        yield mount.root
