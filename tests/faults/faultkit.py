"""Helpers of the fault tests: files in known cache states, resource counts, the cachestat
oracle, and bounded waits for a task's view.

Self-contained (no import of the helpers beside ``tests/``), so that ``mypy tests/faults``
checks these tests on their own.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import anyio
import attrs

import aioduet
from aioduet import Uuid, _kernel

PAGE = _kernel.PAGE_SIZE


# -- files -----------------------------------------------------------------------------


@contextlib.contextmanager
def opened(path: Path, flags: int = os.O_RDONLY) -> Iterator[int]:
    """An fd of ``path`` for the block."""
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def write_clean(path: Path, pages: int) -> Path:
    """A file of ``pages`` pages of random bytes, on disk and out of the page cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with opened(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as fd:
        os.write(fd, os.urandom(pages * PAGE))
        os.fsync(fd)
        _kernel.evict(fd)
    return path


def make_tree(root: Path, dirs: int, files: int, pages: int) -> Path:
    """``dirs`` directories ``dNNN`` of ``files`` files ``fNNN`` of ``pages`` pages each."""
    for d in range(dirs):
        sub = root / f"d{d:03}"
        sub.mkdir(parents=True)
        for f in range(files):
            (sub / f"f{f:03}").write_bytes(b"t" * pages * PAGE)
    return root


def read_pages(path: Path) -> None:
    """Read the whole file, with no readahead past it."""
    with opened(path) as fd:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        while os.read(fd, 1 << 20):
            pass


def uuid_of(path: Path) -> Uuid:
    """The uuid aioduet reports for the file at ``path``."""
    with opened(path) as fd:
        return Uuid.from_stat(os.fstat(fd), _kernel.inode_generation(fd))


def apply_exists(view: dict[Uuid, set[int]], items: Iterable[aioduet.Item]) -> None:
    """Update an EXISTS task's picture (cached pages per file) with its items; an OVERFLOW
    empties it (the scope's current state follows, as at registration)."""
    for item in items:
        if item.state & aioduet.Event.OVERFLOW:
            view.clear()
            continue
        pages = view.setdefault(item.uuid, set())
        if item.state & aioduet.Event.ADDED:
            pages.update(item.pages)
        if item.state & aioduet.Event.REMOVED:
            pages.difference_update(item.pages)


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


def truth(path: Path) -> set[int]:
    """The pages of ``path`` in the page cache now, as cachestat counts them (the oracle)."""
    with opened(path) as fd:
        size = os.fstat(fd).st_size
        return {f + k for f, n in _kernel.page_runs(fd, size, "cache") for k in range(n)}


async def converge(
    task: aioduet.Task,
    view: dict[Uuid, set[int]],
    present: Iterable[Path],
    gone: Iterable[Uuid] = (),
    *,
    seconds: float = 20,
) -> None:
    """Fetch until an EXISTS task's ``view`` equals the cache for ``present`` files, and
    holds no page of the ``gone`` ones (deleted, replaced, or moved out of the scope).

    The cache is read again on every round: the reclaim daemon evicts at its own pace, and
    the task must follow. Raises TimeoutError with the differences when it does not.
    """
    files = list(present)
    lost = list(gone)
    wrong: dict[str, object] = {}
    try:
        with anyio.fail_after(seconds):
            while True:
                wrong = {}
                for path in files:
                    expected = truth(path)
                    seen = view.get(uuid_of(path), set())
                    if seen != expected:
                        wrong[str(path) + " " + str(uuid_of(path))] = (len(seen), len(expected))
                for uuid in lost:
                    if view.get(uuid):
                        wrong[str(uuid)] = len(view[uuid])
                if not wrong:
                    return
                with anyio.move_on_after(0.25):
                    apply_exists(view, await task.fetch(100_000))
    except TimeoutError:
        raise AssertionError(f"the task's view did not converge: {wrong}") from None


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
