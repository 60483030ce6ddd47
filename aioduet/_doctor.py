"""``aioduet doctor``: which kernel interfaces aioduet can use on this machine, and why not.

Every check reads files under two roots, ``proc`` and ``sys`` (``/proc`` and ``/sys``; tests
point them at fake trees), and turns what it finds into a :class:`Check`: a status, a one-line
finding and, when the status is not ``ok``, the fix. Nothing here writes, mounts or changes
anything: the fixes are printed, never applied (the one side effect: looking into
``<debugfs>/tracing`` lets the kernel automount tracefs there, as any reader would). A file
that is missing or unreadable is a finding, never a crash.

The module is longer than most: one small function per check, over shared ``/proc`` helpers,
reads better in one place than spread over a package.

Only two probes call the kernel, through :mod:`aioduet._kernel` on a temporary file of our own:
cachestat (Linux >= 6.5) and mincore. They are parameters too, so tests can fake a kernel
without cachestat.
"""

from __future__ import annotations

import gzip
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any, Literal

import attrs

from . import _kernel
from .errors import ResidencyUnknown
from .sources import auto_sources
from .sources._procfs import CounterFormatError, parse_meminfo, parse_vmstat

__all__ = [
    "TRACEPOINTS",
    "Check",
    "Report",
    "Status",
    "check_cachestat",
    "check_fanotify",
    "check_inotify",
    "check_kdamond",
    "check_mincore",
    "check_root",
    "check_tracefs",
    "check_tracepoints",
    "check_writeback",
    "run_checks",
]

Status = Literal["ok", "warning", "unavailable"]

#: The page-cache events the exact source needs, as paths under ``events/`` of tracefs.
TRACEPOINTS = (
    "filemap/mm_filemap_add_to_page_cache",
    "filemap/mm_filemap_delete_from_page_cache",
    "writeback/writeback_dirty_folio",
    "writeback/sb_clear_inode_writeback",
    "writeback/writeback_single_inode",
)
_MOUNT_TRACEFS = "mount -t tracefs nodev /sys/kernel/tracing"
_CAP_DAC_READ_SEARCH = 2  # open_by_handle_at
_CAP_SYS_ADMIN = 21  # mounting tracefs, fanotify_init with FAN_REPORT_FID
_SMALL_WATCH_LIMIT = 65536  # the pre-5.11 default was 8192: a few thousand directories
#: A probe calls the kernel and answers None when the call works, else why it failed.
Probe = Callable[[], "str | None"]


@attrs.frozen
class Check:
    """The verdict on one kernel interface or privilege."""

    name: str
    """Short name: ``root``, ``tracefs``, ``cachestat``..."""
    status: Status
    """``ok``, ``warning`` (usable with a limit worth knowing) or ``unavailable``."""
    detail: str
    """One line: what was found."""
    fix: str | None = None
    """What to do about it; None when the status is ``ok``."""


@attrs.frozen
class Report:
    """All the checks, and what ``open_duet(sources="auto")`` would run here."""

    checks: tuple[Check, ...]
    """In display order."""
    auto: tuple[str, ...]
    """The source names ``sources="auto"`` picks."""
    runnable: bool
    """Whether the unprivileged source set can run (else ``aioduet doctor`` exits 1)."""

    def __getitem__(self, name: str) -> Check:
        """The check called ``name``; KeyError if there is none."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)

    def as_json(self) -> dict[str, Any]:
        """``{"checks": [{"name", "status", "detail", "fix"}...], "auto": [...]}``."""
        return {
            "checks": [attrs.asdict(check) for check in self.checks],
            "auto": list(self.auto),
        }


# -- reading /proc and /sys ------------------------------------------------------------------


def _read(path: str) -> str | None:
    """The stripped text of a small file; None when it is missing or unreadable."""
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").strip()
    except (OSError, EOFError):  # EOFError: a truncated config.gz
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    return int(text) if text is not None and text.isdigit() else None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _kernel_version(proc: str) -> tuple[int, int] | None:
    """``(major, minor)`` from ``sys/kernel/osrelease`` (``6.18.44-fc-v595``)."""
    found = re.match(r"(\d+)\.(\d+)", _read(f"{proc}/sys/kernel/osrelease") or "")
    return (int(found[1]), int(found[2])) if found else None


def _version_text(version: tuple[int, int] | None) -> str:
    return "an unknown Linux version" if version is None else f"Linux {version[0]}.{version[1]}"


def _effective_caps(proc: str) -> int | None:
    """The ``CapEff`` mask of this process from ``self/status``; None if unreadable."""
    for line in (_read(f"{proc}/self/status") or "").splitlines():
        if line.startswith("CapEff:"):
            try:
                return int(line.split()[1], 16)
            except (IndexError, ValueError):
                return None
    return None


def _mounts(proc: str) -> Iterator[tuple[str, str]]:
    """``(mount point, filesystem type)`` pairs from ``mounts``."""
    for line in (_read(f"{proc}/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 3:
            # The kernel escapes space, tab, newline and backslash as \ooo.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
            yield point, fields[2]


def _under_sys(sys_root: str, point: str) -> str:
    """A mount point below /sys, moved under ``sys_root`` (the fake tree in tests)."""
    if point == "/sys" or point.startswith("/sys/"):
        return sys_root + point[len("/sys") :]
    return point


def _find_tracefs(proc: str, sys_root: str) -> str | None:
    """Where tracefs can be read now: its mount point, or debugfs's ``tracing`` automount."""
    mounts = list(_mounts(proc))
    points = [point for point, kind in mounts if kind == "tracefs"]
    points.sort(key=lambda point: point != "/sys/kernel/tracing")
    if points:
        return _under_sys(sys_root, points[0])
    for point, kind in mounts:
        if kind == "debugfs":  # the kernel mounts tracefs on <debugfs>/tracing when it is used
            candidate = _under_sys(sys_root, point) + "/tracing"
            try:
                os.stat(candidate + "/events")
            except OSError:
                continue
            return candidate
    return None


# -- the checks ------------------------------------------------------------------------------


def _privilege(proc: str, euid: int) -> tuple[bool, str]:
    """Whether the root-only interfaces are usable, and a phrase saying why (not)."""
    if euid != 0:
        return False, f"uid {euid}"
    caps = _effective_caps(proc)
    if caps is None:
        return True, "root (uid 0)"
    missing = [
        name
        for bit, name in (
            (_CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            (_CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"),
        )
        if not caps >> bit & 1
    ]
    if missing:
        return False, f"root (uid 0) without {' and '.join(missing)}"
    return True, "root (uid 0)"


def check_root(proc: str = "/proc", euid: int | None = None) -> Check:
    """Root, with the capabilities the exact source, fanotify and file handles need."""
    euid = os.geteuid() if euid is None else euid
    usable, why = _privilege(proc, euid)
    enables = "the exact tracepoint source, fanotify and file handles (open_by_handle_at)"
    if usable:
        return Check("root", "ok", f"running as {why}: {enables} are possible")
    if euid == 0:
        return Check(
            "root",
            "warning",
            f"running as {why} (a container?): {enables} are not possible",
            "grant the capabilities (for example a privileged container)",
        )
    return Check(
        "root",
        "warning",
        f"not root ({why}): {enables} need root",
        "run as root (sudo aioduet doctor) for the exact sources",
    )


def check_tracefs(proc: str = "/proc", sys_root: str = "/sys") -> Check:
    """tracefs mounted (``mounts``), or mountable (``filesystems``, ``kernel/tracing``)."""
    found = _find_tracefs(proc, sys_root)
    if found is not None:
        return Check("tracefs", "ok", f"mounted at {found.replace(sys_root, '/sys', 1)}")
    filesystems = _read(f"{proc}/filesystems")
    if filesystems is None:
        return Check(
            "tracefs",
            "warning",
            f"not mounted; cannot tell whether the kernel has it ({proc}/filesystems unreadable)",
            f"as root: {_MOUNT_TRACEFS}",
        )
    if "tracefs" not in filesystems.split():
        return Check(
            "tracefs",
            "unavailable",
            "this kernel has no tracefs (built without CONFIG_TRACING)",
            "a kernel built with CONFIG_FTRACE and CONFIG_EVENT_TRACING",
        )
    if os.path.isdir(f"{sys_root}/kernel/tracing"):
        return Check(
            "tracefs",
            "warning",
            f"not mounted; mountable as root with `{_MOUNT_TRACEFS}`",
            f"as root: {_MOUNT_TRACEFS}",
        )
    return Check(
        "tracefs",
        "warning",
        "not mounted, and /sys/kernel/tracing is missing; the kernel has tracefs",
        "as root: mkdir -p /mnt/tracing && mount -t tracefs nodev /mnt/tracing",
    )


def _kallsyms_events(proc: str) -> set[str] | None:
    """The events of :data:`TRACEPOINTS` whose ``__traceiter_`` symbol the kernel has."""
    try:
        with open(f"{proc}/kallsyms", "rb") as f:
            symbols = f.read()  # ~5 MB, 0.1 s: read only when tracefs cannot be
    except OSError:
        return None
    found = set()
    for event in TRACEPOINTS:
        symbol = b" __traceiter_" + event.split("/")[1].encode()
        if symbol + b"\n" in symbols or symbol + b"\t" in symbols:
            found.add(event)
    return found


def check_tracepoints(proc: str = "/proc", sys_root: str = "/sys") -> Check:
    """The five page-cache events, in tracefs's ``events/``, else in ``kallsyms``."""
    where = _find_tracefs(proc, sys_root)
    found: set[str] | None = None
    source = ""
    if where is not None:
        found = set()
        source = f" in {where.replace(sys_root, '/sys', 1)}/events"
        for event in TRACEPOINTS:
            try:
                os.stat(f"{where}/events/{event}")
            except FileNotFoundError:
                continue
            except OSError:  # tracefs is root-only (0700): ask kallsyms instead
                found = None
                break
            found.add(event)
    if found is None:
        found = _kallsyms_events(proc)
        source = f" (per {proc}/kallsyms: tracefs is not readable here)"
        if where is None:
            source = f" (per {proc}/kallsyms: tracefs is not mounted)"
    if found is None:
        return Check(
            "tracepoints",
            "warning",
            "cannot tell: tracefs is not readable and neither is kallsyms",
            f"as root: {_MOUNT_TRACEFS}, then run aioduet doctor again",
        )
    missing = [event for event in TRACEPOINTS if event not in found]
    if not missing:
        return Check(
            "tracepoints", "ok", f"all {len(TRACEPOINTS)} page-cache events present{source}"
        )
    return Check(
        "tracepoints",
        "unavailable",
        f"missing{source}: {', '.join(missing)}",
        "a newer kernel (older ones call the dirty event writeback_dirty_page)",
    )


def _probe_cachestat() -> str | None:
    with tempfile.TemporaryFile() as f:
        try:
            _kernel.cachestat(f.fileno())
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _probe_cachestat_refuses_readonly() -> bool:
    """Whether cachestat answers EPERM on a file we may read but not write."""
    for path in ("/etc/passwd", "/bin/sh", os.path.realpath(sys.executable)):
        if os.access(path, os.W_OK) or not os.access(path, os.R_OK):
            continue  # nothing to learn from a file we may write, or cannot open
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            _kernel.cachestat(fd)
        except ResidencyUnknown:
            return True
        except OSError:
            continue
        finally:
            os.close(fd)
        return False
    return False


def check_cachestat(
    proc: str = "/proc",
    euid: int | None = None,
    probe: Probe = _probe_cachestat,
    refuses_readonly: Callable[[], bool] = _probe_cachestat_refuses_readonly,
) -> Check:
    """cachestat works (a call on a file of our own), for which kernel, and for whose files."""
    euid = os.geteuid() if euid is None else euid
    version = _kernel_version(proc)
    kernel = _version_text(version)
    error = probe()
    if error is None:
        if euid != 0 and refuses_readonly():
            return Check(
                "cachestat",
                "warning",
                f"works ({kernel}), but refuses (EPERM) files you cannot write:"
                " they show as unknown, never as cached",
                "run as root, or watch files you may write",
            )
        return Check("cachestat", "ok", f"works ({kernel}; Linux >= 6.5 has it)")
    if version is not None and version < (6, 5):
        return Check(
            "cachestat",
            "unavailable",
            f"missing: {kernel} is older than 6.5 ({error})",
            "upgrade to Linux 6.5 or later (`aioduet scan` falls back to mincore meanwhile)",
        )
    return Check(
        "cachestat",
        "unavailable",
        f"the call fails on {kernel}: {error}"
        " (a seccomp filter, or a kernel without CONFIG_CACHESTAT_SYSCALL)",
        "allow syscall 451 (cachestat) in the seccomp profile, or enable CONFIG_CACHESTAT_SYSCALL",
    )


def _probe_mincore() -> str | None:
    with tempfile.TemporaryFile() as f:
        f.write(b"\0" * _kernel.PAGE_SIZE)
        f.flush()
        try:
            if len(_kernel.mincore(f.fileno(), _kernel.PAGE_SIZE)) != 1:
                return "a one-page map came back with the wrong length"
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check_mincore(probe: Probe = _probe_mincore) -> Check:
    """mmap + mincore on a file of our own."""
    error = probe()
    if error is None:
        return Check("mincore", "ok", "works: one residency bit per page, for per-page diffs")
    return Check(
        "mincore",
        "unavailable",
        f"mmap + mincore fails: {error}",
        "none known: every Linux has mincore; is a seccomp filter blocking it?",
    )


def _inotify_usage(proc: str, euid: int) -> tuple[int, int, bool]:
    """Inotify instances and watches of processes of ``euid``; whether every one was seen.

    inotify's limits count per user: only that user's processes matter. Reads one
    ``fd/`` listing per process and one ``fdinfo`` file per inotify fd (a few ms in all).
    """
    instances = watches = 0
    complete = True
    for pid in _listdir(proc):
        if not pid.isdigit():
            continue
        try:
            if os.stat(f"{proc}/{pid}").st_uid != euid:
                continue
            fds = os.listdir(f"{proc}/{pid}/fd")
        except FileNotFoundError:  # the process ended meanwhile
            continue
        except OSError:
            complete = False
            continue
        for fd in fds:
            try:
                if os.readlink(f"{proc}/{pid}/fd/{fd}") != "anon_inode:inotify":
                    continue
            except OSError:
                continue
            info = _read(f"{proc}/{pid}/fdinfo/{fd}")
            if info is None:
                complete = False
                continue
            instances += 1
            watches += sum(line.startswith("inotify wd:") for line in info.splitlines())
    return instances, watches, complete


def check_inotify(proc: str = "/proc", euid: int | None = None) -> Check:
    """The limits in ``sys/fs/inotify`` and this user's use of them."""
    euid = os.geteuid() if euid is None else euid
    base = f"{proc}/sys/fs/inotify"
    limits = {
        key: _read_int(f"{base}/{key}")
        for key in ("max_user_watches", "max_user_instances", "max_queued_events")
    }
    if not os.path.isdir(base):
        return Check(
            "inotify",
            "unavailable",
            f"this kernel has no inotify ({base} is missing)",
            "a kernel built with CONFIG_INOTIFY_USER",
        )
    instances, watches, complete = _inotify_usage(proc, euid)
    at_least = "" if complete else "at least "
    shown = {key: "unknown" if value is None else str(value) for key, value in limits.items()}
    detail = (
        f"max_user_watches {shown['max_user_watches']} ({at_least}{watches} used by uid {euid}),"
        f" max_user_instances {shown['max_user_instances']} ({at_least}{instances} used),"
        f" max_queued_events {shown['max_queued_events']}"
    )
    max_watches, max_instances = limits["max_user_watches"], limits["max_user_instances"]
    if max_instances is not None and instances >= max_instances:
        return Check(
            "inotify",
            "unavailable",
            f"no inotify instance left: {detail}",
            f"sysctl fs.inotify.max_user_instances={max(128, 2 * instances)}",
        )
    if max_watches is not None and (
        max_watches < _SMALL_WATCH_LIMIT or watches > 0.9 * max_watches
    ):
        return Check(
            "inotify",
            "warning",
            f"few watches (one per directory) left: {detail}",
            "sysctl fs.inotify.max_user_watches=524288 (persist it in /etc/sysctl.d/)",
        )
    return Check("inotify", "ok", detail)


def check_writeback(proc: str = "/proc") -> Check:
    """The counters of ``vmstat`` (else ``meminfo``) that the writeback source polls."""
    problems = []
    for name, parse in (
        ("vmstat", parse_vmstat),
        ("meminfo", lambda data: parse_meminfo(data, _kernel.PAGE_SIZE)),
    ):
        try:
            with open(f"{proc}/{name}", "rb") as f:
                parse(f.read())
        except (OSError, CounterFormatError) as exc:
            problems.append(f"{proc}/{name}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if name == "vmstat":
            return Check("writeback", "ok", "nr_dirty, nr_writeback and nr_written in /proc/vmstat")
        return Check(
            "writeback",
            "warning",
            f"{problems[0]}; falls back to meminfo, which has no cumulative counter",
            "mount procfs with a complete /proc/vmstat",
        )
    return Check(
        "writeback",
        "unavailable",
        "; ".join(problems),
        "mount procfs on /proc (mount -t proc proc /proc)",
    )


def _fanotify_in_kernel(proc: str) -> bool | None:
    """``sys/fs/fanotify`` (Linux >= 5.13), else ``config.gz``; None when neither tells."""
    if os.path.isdir(f"{proc}/sys/fs/fanotify"):
        return True
    try:
        with gzip.open(f"{proc}/config.gz", "rt") as f:
            return any(line.strip() == "CONFIG_FANOTIFY=y" for line in f)
    except (OSError, EOFError):
        return None


def check_fanotify(proc: str = "/proc", euid: int | None = None) -> Check:
    """fanotify in the kernel (no fanotify_init here: that needs ctypes), and root."""
    euid = os.geteuid() if euid is None else euid
    present = _fanotify_in_kernel(proc)
    version = _version_text(_kernel_version(proc))
    if present is False:
        return Check(
            "fanotify",
            "unavailable",
            "this kernel has no fanotify (CONFIG_FANOTIFY is not set)",
            "a kernel built with CONFIG_FANOTIFY",
        )
    if present is None:
        return Check(
            "fanotify",
            "warning",
            f"cannot tell whether {version} has it (no {proc}/sys/fs/fanotify, no config.gz)",
            "check the kernel configuration for CONFIG_FANOTIFY=y",
        )
    version_tuple = _kernel_version(proc)
    if version_tuple is not None and version_tuple < (5, 17):
        return Check(
            "fanotify",
            "unavailable",
            f"{version} lacks FAN_RENAME and FAN_REPORT_TARGET_FID (Linux 5.17)",
            "upgrade to Linux 5.17 or later",
        )
    usable, why = _privilege(proc, euid)
    if not usable:
        return Check(
            "fanotify",
            "unavailable",
            f"in the kernel, but usable as root only (FAN_MARK_FILESYSTEM); this is {why}",
            "run as root",
        )
    groups = _read(f"{proc}/sys/fs/fanotify/max_user_groups") or "unknown"
    marks = _read(f"{proc}/sys/fs/fanotify/max_user_marks") or "unknown"
    return Check(
        "fanotify",
        "ok",
        f"usable as root (max_user_groups {groups}, max_user_marks {marks}): sources="
        "['fanotify', 'residency', 'writeback'] watch trees too big for inotify's watches",
    )


def _gib(text: str | None) -> float | None:
    return int(text) / (1 << 30) if text is not None and text.isdigit() else None


def _damon_sysfs(sys_root: str) -> tuple[list[str], list[str], bool, bool]:
    """DAMON's sysfs: kdamonds switched on (descriptions, indices), whether one may page out
    (an action we could not read counts as one), whether every state file was readable."""
    base = f"{sys_root}/kernel/mm/damon/admin/kdamonds"
    running: list[str] = []
    indices: list[str] = []
    pageout = False
    complete = True
    for index in (name for name in _listdir(base) if name.isdigit()):
        state = _read(f"{base}/{index}/state")
        if state is None:
            complete = False  # 0600 files: root only
            continue
        if state != "on":
            continue
        indices.append(index)
        actions: set[str] = set()
        spans: list[tuple[float, float]] = []
        operations: set[str] = set()
        contexts = f"{base}/{index}/contexts"
        for context in (name for name in _listdir(contexts) if name.isdigit()):
            operations.add(_read(f"{contexts}/{context}/operations") or "?")
            schemes = f"{contexts}/{context}/schemes"
            actions.update(
                _read(f"{schemes}/{scheme}/action") or "?"
                for scheme in _listdir(schemes)
                if scheme.isdigit()
            )
            targets = f"{contexts}/{context}/targets"
            for target in (name for name in _listdir(targets) if name.isdigit()):
                regions = f"{targets}/{target}/regions"
                for region in (name for name in _listdir(regions) if name.isdigit()):
                    start = _gib(_read(f"{regions}/{region}/start"))
                    end = _gib(_read(f"{regions}/{region}/end"))
                    if start is not None and end is not None:
                        spans.append((start, end))
        what = f"kdamond {index}: {'+'.join(sorted(operations)) or 'no context'}"
        if actions:
            what += " " + "+".join(sorted(actions))
        if spans:
            what += f" over {min(s for s, _ in spans):.1f}-{max(e for _, e in spans):.1f} GiB"
        running.append(what)
        pageout = pageout or "pageout" in actions or "?" in actions
    return running, indices, pageout, complete


def check_kdamond(proc: str = "/proc", sys_root: str = "/sys") -> Check:
    """kdamond threads (``*/comm``), DAMON's sysfs, and the DAMON_RECLAIM module."""
    threads = sorted(
        comm
        for pid in _listdir(proc)
        if pid.isdigit() and (comm := _read(f"{proc}/{pid}/comm") or "").startswith("kdamond")
    )
    running, indices, pageout, complete = _damon_sysfs(sys_root)
    stop = f"echo off > /sys/kernel/mm/damon/admin/kdamonds/{(indices or ['N'])[0]}/state"
    if _read(f"{sys_root}/module/damon_reclaim/parameters/enabled") in ("Y", "1"):
        running.append("DAMON_RECLAIM enabled")
        pageout = True
        stop = "echo N > /sys/module/damon_reclaim/parameters/enabled"
    if not threads and not running:
        return Check("kdamond", "ok", "no kdamond running: pages leave the cache under pressure")
    found = f"{', '.join(threads) or 'no kdamond thread'} running"
    if running:
        found += f" ({'; '.join(running)})"
    elif not complete:
        found += " (what it does is readable by root only)"
    if running and not pageout:
        return Check("kdamond", "ok", f"{found}: monitoring only, no pageout scheme")
    verb = "evicts" if pageout else "may evict"
    return Check(
        "kdamond",
        "warning",
        f"{found}: it {verb} idle page cache, so REMOVED items will come that nobody caused",
        f"nothing to fix (tasks see these evictions as REMOVED); to stop it, as root: {stop}",
    )


def _exact(privileged: tuple[bool, str], tracefs: Check, tracepoints: Check) -> Check:
    reasons: list[str] = []
    fixes: list[str] = []
    if not privileged[0]:
        reasons.append(f"needs root: this is {privileged[1]}")
        fixes.append("run as root")
    if tracefs.status == "unavailable":
        reasons.append(f"tracefs: {tracefs.detail}")
        fixes.append(tracefs.fix or "")
    if tracepoints.status != "ok":
        reasons.append(f"events: {tracepoints.detail}")
        fixes.append(tracepoints.fix or "")
    if reasons:
        return Check("exact", "unavailable", "; ".join(reasons), "; ".join(fixes))
    ready = "root, tracefs " + ("mounted" if tracefs.status == "ok" else "mountable")
    ready += f" and all {len(TRACEPOINTS)} events are here"
    return Check("exact", "ok", f"usable: {ready}")


def run_checks(
    proc: str = "/proc",
    sys_root: str = "/sys",
    euid: int | None = None,
    *,
    cachestat_probe: Probe = _probe_cachestat,
    refuses_readonly: Callable[[], bool] = _probe_cachestat_refuses_readonly,
    mincore_probe: Probe = _probe_mincore,
) -> Report:
    """Run every check.

    Args:
        proc: Where procfs is mounted.
        sys_root: Where sysfs is mounted.
        euid: The user to judge for (default: this process's effective uid).
        cachestat_probe: Calls cachestat; None when it works, else why not.
        refuses_readonly: Whether cachestat answers EPERM for files the caller cannot write.
        mincore_probe: Calls mmap + mincore; None when it works, else why not.

    Returns:
        The checks in display order, the ``auto`` set, and whether it can run.
    """
    euid = os.geteuid() if euid is None else euid
    tracefs = check_tracefs(proc, sys_root)
    tracepoints = check_tracepoints(proc, sys_root)
    needed = [
        check_cachestat(proc, euid, cachestat_probe, refuses_readonly),
        check_mincore(mincore_probe),
        check_inotify(proc, euid),
        check_writeback(proc),
    ]
    exact = _exact(_privilege(proc, euid), tracefs, tracepoints)
    # As open_duet("auto") would choose, judged without mounting anything.
    auto = auto_sources(None if exact.status == "ok" else exact.detail)
    blocked = [check.name for check in needed if check.status == "unavailable"]
    names = "+".join(auto)
    if blocked:
        auto_check = Check(
            "auto",
            "unavailable",
            f"{names} cannot run here: {', '.join(blocked)} unavailable",
            f"see the {', '.join(blocked)} row{'s' if len(blocked) > 1 else ''}",
        )
    elif "tracepoints" in auto:
        auto_check = Check("auto", "ok", f"{names}: the exact set, as root with tracefs")
    else:
        auto_check = Check(
            "auto",
            "ok",
            f"{names}, the unprivileged set (the exact set is unavailable: see its row)",
        )
    checks = (
        check_root(proc, euid),
        tracefs,
        tracepoints,
        *needed,
        check_fanotify(proc, euid),
        check_kdamond(proc, sys_root),
        exact,
        auto_check,
    )
    return Report(checks=checks, auto=auto, runnable=not blocked)
