"""What the benchmarks that hold page cache share: dropping files from the cache, the block
device's read counter, and a memory cgroup whose page cache follows a budget."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path
from typing import Any

from _common import log

SECTOR = 512
"""Bytes per sector in ``/sys/block/<disk>/stat``, whatever the device's own sector size."""
_MIB = 1 << 20


# -- the page cache ------------------------------------------------------------------------


def cached_pages(files: list[Path]) -> tuple[int, int]:
    """(cached pages, pages) of the files, from cachestat."""
    from aioduet import _kernel  # noqa: PLC0415 - cachestat's wrapper, nothing else

    page = os.sysconf("SC_PAGE_SIZE")
    cached = total = 0
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            total += -(-os.fstat(fd).st_size // page)
            cached += _kernel.cachestat(fd).cache
        finally:
            os.close(fd)
    return cached, total


def evict(files: list[Path]) -> float:
    """Drop the files from the page cache; the fraction of their pages still cached."""
    os.sync()
    fraction = 1.0
    for _ in range(3):  # a page under writeback or locked survives one DONTNEED
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        cached, total = cached_pages(files)
        fraction = cached / total if total else 0.0
        if fraction < 0.001:
            break
        time.sleep(0.5)
    return fraction


# -- the device ----------------------------------------------------------------------------


def disk_of(path: Path) -> Path:
    """``/sys/block/<disk>`` of the filesystem holding ``path`` (a partition's parent)."""
    dev = os.stat(path).st_dev
    node = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
    if not node.exists():
        raise RuntimeError(f"{path} is not on a block device (st_dev {dev:#x})")
    if (node / "partition").exists():
        node = node.parent
    return node


def sectors_read(disk: Path) -> int:
    # /sys/block/<dev>/stat (Documentation/block/stat.rst): field 3 is sectors read, 512 B each.
    return int((disk / "stat").read_text().split()[2])


# -- the memory cgroup ---------------------------------------------------------------------


class MemoryCgroup:
    """A fresh child of this process's memory cgroup whose page cache is held near ``cache``.

    The tools' own memory (interpreters, the framework's store, kernel objects) is charged to
    the cgroup too, and differs with and without aioduet: a fixed limit would leave each side
    a different amount of page cache. :meth:`sample`, called a few times a second, sets the
    limit to ``cache`` plus what is charged that is not page cache plus ``headroom``, so that
    both sides get the same page cache whatever their own memory.
    """

    def __init__(self, cache: int, headroom: int, name: str) -> None:
        self.version, parent = self._parent()
        self.path = parent / name
        self.cache, self.headroom = cache, headroom
        self.limit = 0
        # A tool's memory can grow faster than the limit follows it: v2's memory.high
        # throttles and reclaims instead of killing, and on v1 the OOM killer is turned off,
        # so that a tool at the limit waits for the next sample to raise it.
        self._limit_file = "memory.limit_in_bytes" if self.version == 1 else "memory.high"
        self._usage_file = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        self.path.mkdir()
        try:
            if self.version == 1:
                (self.path / "memory.oom_control").write_text("1\n")
            elif (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0\n")
            self._set_limit(cache + headroom)
        except OSError:
            self.path.rmdir()
            raise
        self.limits: list[int] = []
        self.caches: list[int] = []
        self.others: list[int] = []

    def _set_limit(self, limit: int) -> None:
        limit -= limit % 4096
        if abs(limit - self.limit) < _MIB:
            return
        try:
            (self.path / self._limit_file).write_text(f"{limit}\n")
        except OSError:  # v1: EBUSY when lowering below what cannot be reclaimed at once
            return
        self.limit = limit

    @staticmethod
    def _parent() -> tuple[int, Path]:
        """Which hierarchy has the memory controller, and our cgroup in it."""
        v1_root = v2_root = None
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if fields[2] == "cgroup" and "memory" in fields[3].split(","):
                    v1_root = Path(fields[1])
                elif fields[2] == "cgroup2":
                    listed = Path(fields[1]) / "cgroup.controllers"
                    if listed.exists() and "memory" in listed.read_text().split():
                        v2_root = Path(fields[1])
        # /proc/self/cgroup: "ID:controllers:path"; v2 is the line "0::path".
        own: dict[str, str] = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, place = line.split(":", 2)
            own[controllers] = place
        if v1_root is not None:
            where = next(w for c, w in own.items() if "memory" in c.split(","))
            return 1, v1_root / where.lstrip("/")
        if v2_root is not None:
            parent = v2_root / own[""].lstrip("/")
            control = parent / "cgroup.subtree_control"
            if "memory" not in control.read_text().split():
                # Fails (EBUSY) if processes sit in a non-root parent: then run us elsewhere.
                control.write_text("+memory\n")
            return 2, parent
        raise RuntimeError("no memory cgroup controller is mounted (v1 or v2)")

    def add(self, pid: int) -> None:
        """Move the running process ``pid`` (all its threads) into the cgroup.

        What it has already charged elsewhere stays there (v1 moves no charge unless
        ``memory.move_charge_at_immigrate`` says so, v2 never): only what it brings into
        memory from now on counts here.
        """
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run by a shell that first moves itself into the cgroup, then execs."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv]

    def sample(self) -> None:
        """Record the cgroup's page cache and other memory; move the limit after the latter."""
        stat = {}
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, value = line.split()
            stat[key] = int(value)
        # v1 counts page cache (shmem included) in total_cache, v2 in file.
        cache = stat.get("total_cache", 0) if self.version == 1 else stat.get("file", 0)
        usage = int((self.path / self._usage_file).read_text())
        other = max(0, usage - cache)
        self.caches.append(cache)
        self.others.append(other)
        self.limits.append(self.limit)
        self._set_limit(self.cache + other + self.headroom)

    def figures(self, since: int = 0) -> dict[str, Any]:
        """The samples' figures, from sample number ``since`` on (``failcnt``: ever)."""
        caches, others, limits = self.caches[since:], self.others[since:], self.limits[since:]
        return {
            "version": self.version,
            "cache_budget_bytes": self.cache,
            "headroom_bytes": self.headroom,
            "peak_cache_bytes": max(caches, default=0),
            "mean_cache_bytes": int(statistics.fmean(caches)) if caches else 0,
            "peak_other_bytes": max(others, default=0),
            "limit_bytes": {"min": min(limits, default=0), "max": max(limits, default=0)},
            "samples": len(caches),
            "failcnt": self.failcnt(),
        }

    def failcnt(self) -> int | None:
        if self.version == 1:
            return int((self.path / "memory.failcnt").read_text())
        events = (self.path / "memory.events").read_text().split()
        return int(events[events.index("max") + 1])

    def remove(self) -> None:
        for _ in range(50):
            if not (self.path / "cgroup.procs").read_text().strip():
                break
            time.sleep(0.1)
        if self.version == 1:
            # Page cache stays charged to a removed v1 cgroup: reclaim it first.
            for _ in range(5):
                try:
                    (self.path / "memory.force_empty").write_text("0\n")
                    break
                except OSError:
                    time.sleep(0.2)
        elif (self.path / "memory.reclaim").exists():
            with contextlib.suppress(OSError):  # EAGAIN when not all of it could be reclaimed
                (self.path / "memory.reclaim").write_text(f"{self.limit}\n")
        for _ in range(50):
            try:
                self.path.rmdir()
            except OSError:
                time.sleep(0.1)
            else:
                return
        log(f"warning: could not remove the cgroup {self.path}")
