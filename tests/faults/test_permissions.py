"""EACCES: files the scan may not open and directories it may not list or watch.

Root bypasses mode bits, so the framework runs as ``nobody`` (uid and gid 65534) in a forked
child of the test (the Python installation under /root could not be started afresh as
nobody; a fork keeps what is imported). The child opens an unprivileged framework over a
tree with a root-only file and a root-only directory, and sends back what its task saw.

Checked: the registration scan ends; the cached pages of the file nobody owns reach the task;
nothing of the others does (never reported as cached): a root-only file (EACCES), a
world-readable root file (cachestat's EPERM) and a file in a root-only directory;
``status()`` counts the files whose residency is unknown and the directories that could not
be listed or watched; registering a directory nobody may open raises PermissionError; the
exact set refuses to start without root (SourceUnavailable, EPERM). The child checks that it
holds no more fds or threads after the framework closed than before; the parent's own leak
check covers the rest.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from faultkit import Resources, read_pages, uuid_of, write_clean
from nobody import NOBODY, as_nobody

import aioduet
from aioduet import Event

pytestmark = [pytest.mark.anyio, pytest.mark.kernel, pytest.mark.usefixtures("leaks")]


async def _watch(top: str, readable: tuple[int, int], wanted: int) -> dict[str, Any]:
    """As nobody: register ``top`` and collect until ``wanted`` pages of ``readable`` came."""
    before = Resources.now()
    seen: dict[tuple[int, int], set[int]] = {}
    async with (
        aioduet.open_duet("scan", interval=0.1) as duet,
        duet.register("nobody", Event.EXISTS, top) as task,
    ):
        with anyio.fail_after(20):
            await task.wait_scanned()
            while len(seen.get(readable, ())) < wanted:
                for item in await task.fetch(1000):
                    if item.state & Event.ADDED:
                        pages = seen.setdefault((item.uuid.dev, item.uuid.ino), set())
                        pages.update(item.pages)
        status = await duet.status()
        try:
            duet.register("locked", Event.EXISTS, os.path.join(top, "locked"))
        except PermissionError as exc:
            refused = f"PermissionError: {exc}"
        else:
            refused = "registered"
    try:
        async with aioduet.open_duet("exact"):
            exact = "started"
    except aioduet.SourceUnavailable as exc:
        exact = f"{errno.errorcode[exc.errno or 0]}: {exc}"
    after = Resources.now()
    sources = {s.name: (s.errors, s.unknown, s.last_error) for s in status.sources}
    return {
        "seen": {f"{dev}:{ino}": sorted(pages) for (dev, ino), pages in seen.items()},
        "sources": sources,
        "refused": refused,
        "exact": exact,
        "leaked": after.leaked_since(before),
    }


async def test_files_and_directories_the_scan_may_not_open(ext4_dir: Path) -> None:
    os.chmod(ext4_dir, 0o755)
    readable = write_clean(ext4_dir / "readable", 8)
    os.chown(readable, NOBODY, NOBODY)  # cachestat answers only owners and writers
    refused = write_clean(ext4_dir / "refused", 8)  # root's, 0644: cachestat says EPERM
    secret = write_clean(ext4_dir / "secret", 8)  # root's, 0600: open() fails with EACCES
    locked = ext4_dir / "locked"
    hidden = write_clean(locked / "hidden", 8)  # in a root-only directory: never listed
    readable.chmod(0o644)
    refused.chmod(0o644)
    secret.chmod(0o600)
    hidden.chmod(0o644)
    locked.chmod(0o700)
    others = {"refused": refused, "secret": secret, "hidden": hidden}
    for path in (readable, *others.values()):
        read_pages(path)
    uuids = {name: uuid_of(path) for name, path in others.items()}
    ident = uuid_of(readable)
    result = await as_nobody(_watch, str(ext4_dir), (ident.dev, ident.ino), 8)

    assert result["seen"][f"{ident.dev}:{ident.ino}"] == list(range(8))
    for name, uuid in uuids.items():
        assert f"{uuid.dev}:{uuid.ino}" not in result["seen"], name
    inotify_errors = result["sources"]["inotify"][0]
    residency_errors, unknown, last_error = result["sources"]["residency"]
    assert unknown == 2  # the secret file and the refused one
    assert residency_errors >= 1 and inotify_errors >= 1  # the locked directory
    assert last_error is not None and "locked" in last_error and "permission denied" in last_error
    assert result["refused"].startswith("PermissionError: ")
    assert "locked" in result["refused"]
    assert result["exact"].startswith("EPERM: ")
    assert result["leaked"] == {}
