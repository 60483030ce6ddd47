"""Helpers of the fault tests: files in known cache states (those of ``tests/pagecache.py``),
resource counts, the cachestat oracle, and bounded waits for a task's view."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import attrs
import pagecache
from pagecache import opened, read_pages, uuid_of, write_clean
from taskitems import apply_exists, converge, truth

import aioduet
from aioduet import Uuid, _kernel

__all__ = [
    "PAGE",
    "Resources",
    "apply_exists",
    "converge",
    "make_tree",
    "opened",
    "own_instances",
    "read_pages",
    "truth",
    "uuid_of",
    "wait_overflow",
    "write_clean",
]

PAGE = _kernel.PAGE_SIZE


# -- files -----------------------------------------------------------------------------
# The page-cache helpers of the other tests, and the EXISTS picture they keep.


def make_tree(root: Path, dirs: int, files: int, pages: int) -> Path:
    """``dirs`` directories ``dNNN`` of ``files`` files ``fNNN`` of ``pages`` pages each."""
    return pagecache.make_tree(root, dirs, files, pages * PAGE)


# -- resources ---------------------------------------------------------------------------

INSTANCES = Path("/sys/kernel/tracing/instances")
#: The source sets that every fault is tried against.
SOURCE_SETS = ["scan", "exact"]


def _children() -> set[int]:
    found: set[int] = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            text = Path(f"/proc/self/task/{tid}/children").read_text()
        except FileNotFoundError:
            continue
        found.update(int(pid) for pid in text.split())
    return found


def own_instances() -> set[str]:
    """tracefs instances that aioduet created for this process."""
    prefix = f"aioduet-{os.getpid()}-"
    try:
        return {p.name for p in INSTANCES.iterdir() if p.name.startswith(prefix)}
    except (FileNotFoundError, PermissionError):  # not mounted; not root
        return set()


@attrs.frozen
class Resources:
    """What a process holds that a closed framework must have given back."""

    fds: frozenset[str]
    threads: tuple[str, ...]
    children: frozenset[int]
    instances: frozenset[str]

    @classmethod
    def now(cls) -> Resources:
        threads = sorted(
            t.name for t in threading.enumerate() if not t.name.startswith("AnyIO worker")
        )
        return cls(
            frozenset(os.listdir("/proc/self/fd")),
            tuple(threads),
            frozenset(_children()),
            frozenset(own_instances()),
        )

    def leaked_since(self, before: Resources) -> dict[str, object]:
        """What is held now and was not held ``before`` (empty when nothing leaked)."""
        leaked: dict[str, object] = {}
        fds = self.fds - before.fds
        if fds:
            leaked["fds"] = {fd: _target(fd) for fd in sorted(fds)}
        if len(self.threads) > len(before.threads):
            leaked["threads"] = self.threads
        if self.children - before.children:
            leaked["children"] = sorted(self.children - before.children)
        if self.instances - before.instances:
            leaked["instances"] = sorted(self.instances - before.instances)
        return leaked


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


async def wait_overflow(
    task: aioduet.Task, view: dict[Uuid, set[int]], seconds: float = 15
) -> None:
    """Fetch (applying items to ``view``) until an OVERFLOW item arrives."""
    with anyio.fail_after(seconds):
        while True:
            items = await task.fetch(100_000)
            apply_exists(view, items)
            if any(item.state & aioduet.Event.OVERFLOW for item in items):
                return
