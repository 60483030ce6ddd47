"""``aioduet doctor``: on this machine (as root and as nobody), and on fake /proc and /sys trees."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from aioduet import _cli, _doctor
from aioduet._doctor import TRACEPOINTS, Report, run_checks
from aioduet.sources import resolve_sources

NAMES = [
    "root",
    "tracefs",
    "tracepoints",
    "cachestat",
    "mincore",
    "inotify",
    "writeback",
    "fanotify",
    "kdamond",
    "exact",
    "auto",
]
#: What ``sources="auto"`` resolves to in this version (the doctor must say the same).
EXACT = ["inotify", "tracepoints", "residency"]
UNPRIVILEGED = list(resolve_sources("scan"))
#: Whether this version has the exact source (the doctor then judges it usable or not).
MOUNT = "mount -t tracefs nodev /sys/kernel/tracing"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _kdamond_threads() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            comm = _read(f"/proc/{pid}/comm") if pid.isdigit() else ""
        except OSError:
            continue
        if comm.startswith("kdamond"):
            found.append(comm)
    return sorted(found)


def _tracefs_mounted() -> bool:
    with open("/proc/mounts") as f:
        return any(line.split()[2] == "tracefs" for line in f)


# -- this machine ----------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="CI runs as root; the nobody test covers the rest")
def test_this_machine_as_root_agrees_with_proc_and_sys() -> None:
    report = run_checks()
    assert [check.name for check in report.checks] == NAMES
    assert report["root"].status == "ok"
    assert report["root"].fix is None
    release = os.uname().release
    assert tuple(map(int, release.split(".")[:2])) >= (6, 5)  # REFERENCE.md section 4
    assert report["cachestat"].status == "ok"
    assert f"Linux {'.'.join(release.split('.')[:2])}" in report["cachestat"].detail
    assert report["mincore"].status == "ok"
    # Not mounted at boot here, but mountable; another test may have mounted it since.
    if _tracefs_mounted():
        assert report["tracefs"].status == "ok"
        present = all(os.path.isdir(f"/sys/kernel/tracing/events/{e}") for e in TRACEPOINTS)
        assert (report["tracepoints"].status == "ok") == present
    else:
        assert report["tracefs"].status == "warning"
        assert f"mountable as root with `{MOUNT}`" in report["tracefs"].detail
    inotify = report["inotify"].detail
    for key in ("max_user_watches", "max_user_instances", "max_queued_events"):
        assert f"{key} {_read(f'/proc/sys/fs/inotify/{key}')}" in inotify
    assert report["fanotify"].status == "ok"
    assert "usable as root" in report["fanotify"].detail
    threads = _kdamond_threads()
    if threads:  # REFERENCE.md section 2: DAMON reclaim runs from boot on this machine kind
        assert report["kdamond"].status == "warning"
        assert threads[0] in report["kdamond"].detail
        assert "REMOVED items will come that nobody caused" in report["kdamond"].detail
    else:
        assert report["kdamond"].status == "ok"
    assert report.runnable
    assert report["auto"].status == "ok"
    kernel_ready = report["tracepoints"].status == "ok"
    assert (report["exact"].status == "ok") == kernel_ready
    # Doctor judges as open_duet("auto") chooses (the check mounts tracefs as root).
    assert report.auto == resolve_sources("auto") == tuple(EXACT if kernel_ready else UNPRIVILEGED)


NOBODY = """
import json, os, sys
from aioduet import _cli, _doctor  # import first: /root, where Python lives, is 0700
os.setgid(65534); os.setuid(65534)
sys.exit(_cli.main(["doctor", "--json"]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_as_nobody_the_exact_set_is_unavailable_and_says_why() -> None:
    result = subprocess.run(
        [sys.executable, "-c", NOBODY],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    checks = {check["name"]: check for check in output["checks"]}
    assert checks["root"]["status"] == "warning"
    assert checks["root"]["detail"].startswith("not root (uid 65534)")
    assert "run as root" in checks["root"]["fix"]
    assert checks["exact"]["status"] == "unavailable"
    assert checks["exact"]["detail"].startswith("needs root: this is uid 65534")
    assert checks["fanotify"]["status"] == "unavailable"
    assert "usable as root only" in checks["fanotify"]["detail"]
    # REFERENCE.md section 4: this kernel refuses cachestat on files the caller cannot write.
    assert checks["cachestat"]["status"] == "warning"
    assert "EPERM" in checks["cachestat"]["detail"]
    assert "uid 65534" in checks["inotify"]["detail"]
    if _tracefs_mounted():  # tracefs is 0700: the events are looked up in kallsyms instead
        assert "kallsyms" in checks["tracepoints"]["detail"]
    if _kdamond_threads():  # DAMON's sysfs files are 0600
        assert checks["kdamond"]["status"] == "warning"
        assert "may evict" in checks["kdamond"]["detail"]
    assert output["auto"] == UNPRIVILEGED
    assert "the exact set is unavailable" in checks["auto"]["detail"]


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aioduet", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_python_m_aioduet_doctor_json_has_the_documented_shape() -> None:
    result = _run_cli("--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert set(output) == {"checks", "auto"}
    assert [check["name"] for check in output["checks"]] == NAMES
    for check in output["checks"]:
        assert set(check) == {"name", "status", "detail", "fix"}
        assert check["status"] in ("ok", "warning", "unavailable")
        assert isinstance(check["detail"], str) and "\n" not in check["detail"]
        assert (check["fix"] is None) == (check["status"] == "ok")
    assert output["auto"] == list(resolve_sources("auto"))


def test_python_m_aioduet_doctor_prints_an_aligned_table() -> None:
    result = _run_cli()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line and not line.startswith(" ")]
    assert [row.split()[0] for row in rows[: len(NAMES)]] == NAMES
    detail_columns = {len(row) - len(row.split(None, 2)[2]) for row in rows[: len(NAMES)]}
    assert len(detail_columns) == 1  # every finding starts in the same column
    fixes = [line for line in lines if line.lstrip().startswith("fix: ")]
    assert {len(line) - len(line.lstrip()) for line in fixes} == detail_columns
    assert lines[-1] == f"sources='auto' runs {'+'.join(resolve_sources('auto'))} here"


def test_the_command_line_does_not_import_the_doctor_at_start_up() -> None:
    code = "import sys, aioduet._cli; print('aioduet._doctor' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


# -- fake /proc and /sys trees ---------------------------------------------------------------

SYMBOLS = "".join(
    f"0000000000000000 T __traceiter_{event.split('/')[1]}\n" for event in TRACEPOINTS
)
HEALTHY: dict[str, str] = {
    "proc/filesystems": "nodev\tsysfs\nnodev\ttracefs\n\text4\n",
    "proc/mounts": "sysfs /sys sysfs rw 0 0\n/dev/vda / ext4 rw 0 0\n",
    "proc/sys/kernel/osrelease": "6.18.44-fc\n",
    "proc/sys/fs/inotify/max_user_watches": "192536\n",
    "proc/sys/fs/inotify/max_user_instances": "128\n",
    "proc/sys/fs/inotify/max_queued_events": "16384\n",
    "proc/sys/fs/fanotify/max_user_groups": "128\n",
    "proc/sys/fs/fanotify/max_user_marks": "1000\n",
    "proc/vmstat": "nr_dirty 1\nnr_writeback 0\nnr_written 5\nnr_dirtied 6\n",
    "proc/meminfo": "Dirty:   4 kB\nWriteback:   0 kB\n",
    "proc/self/status": "Name:\tpython\nCapEff:\t000001ffffffffff\n",
    "proc/kallsyms": SYMBOLS,
    "sys/kernel/tracing/README": "",
}


def _tree(root: Path, files: Mapping[str, str | None]) -> None:
    """Files under ``root``: text, or None to remove a file or directory of :data:`HEALTHY`."""
    for name, text in files.items():
        path = root / name
        if text is None:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _fake(
    root: Path,
    changes: Mapping[str, str | None] | None = None,
    *,
    euid: int = 0,
    cachestat: str | None = None,
    **options: Any,
) -> Report:
    _tree(root, HEALTHY)
    _tree(root, changes or {})
    return run_checks(
        str(root / "proc"),
        str(root / "sys"),
        euid,
        cachestat_probe=lambda: cachestat,
        refuses_readonly=lambda: False,
        mincore_probe=lambda: None,
        **options,
    )


def test_a_healthy_fake_host_with_tracefs_unmounted(tmp_path: Path) -> None:
    report = _fake(tmp_path)
    assert report.runnable
    assert report["tracefs"].status == "warning"
    assert report["tracefs"].detail == f"not mounted; mountable as root with `{MOUNT}`"
    assert report["tracefs"].fix == f"as root: {MOUNT}"
    assert report["tracepoints"].status == "ok"
    assert "kallsyms: tracefs is not mounted" in report["tracepoints"].detail
    assert report["cachestat"].detail == "works (Linux 6.18; Linux >= 6.5 has it)"
    assert report["inotify"].status == "ok"
    assert report["kdamond"].status == "ok"
    assert report["fanotify"].status == "ok"
    assert "max_user_marks 1000" in report["fanotify"].detail
    assert "tracefs mountable" in report["exact"].detail


def test_mounted_tracefs_is_searched_for_the_events(tmp_path: Path) -> None:
    events = {f"sys/kernel/tracing/events/{event}/id": "1\n" for event in TRACEPOINTS[:-1]}
    report = _fake(
        tmp_path,
        {"proc/mounts": "nodev /sys/kernel/tracing tracefs rw,relatime 0 0\n", **events},
    )
    assert report["tracefs"].status == "ok"
    assert report["tracefs"].detail == "mounted at /sys/kernel/tracing"
    assert report["tracepoints"].status == "unavailable"
    assert report["tracepoints"].detail.endswith(f"events: {TRACEPOINTS[-1]}")
    assert report["exact"].status == "unavailable"
    assert TRACEPOINTS[-1] in report["exact"].detail
    assert report.runnable  # the unprivileged set does not need tracefs


def test_tracefs_through_debugfs(tmp_path: Path) -> None:
    events = {f"sys/kernel/debug/tracing/events/{event}/id": "1\n" for event in TRACEPOINTS}
    report = _fake(
        tmp_path, {"proc/mounts": "debugfs /sys/kernel/debug debugfs rw 0 0\n", **events}
    )
    assert report["tracefs"].detail == "mounted at /sys/kernel/debug/tracing"
    assert report["tracepoints"].status == "ok"


def test_a_kernel_without_tracefs(tmp_path: Path) -> None:
    report = _fake(tmp_path, {"proc/filesystems": "nodev\tsysfs\n", "proc/kallsyms": ""})
    assert report["tracefs"].status == "unavailable"
    assert "CONFIG_TRACING" in report["tracefs"].detail
    assert report["tracepoints"].status == "unavailable"
    assert report["exact"].status == "unavailable"
    assert "tracefs: this kernel has no tracefs" in report["exact"].detail


def test_no_cachestat_makes_the_unprivileged_set_unrunnable(tmp_path: Path) -> None:
    old = _fake(tmp_path, {"proc/sys/kernel/osrelease": "5.15.0\n"}, cachestat="ENOSYS")
    assert old["cachestat"].status == "unavailable"
    assert old["cachestat"].detail == "missing: Linux 5.15 is older than 6.5 (ENOSYS)"
    assert "6.5" in (old["cachestat"].fix or "")
    assert not old.runnable
    assert old["auto"].status == "unavailable"
    assert "cachestat unavailable" in old["auto"].detail
    blocked = _fake(tmp_path, cachestat="Operation not permitted")
    assert "seccomp" in blocked["cachestat"].detail
    assert not blocked.runnable


def test_cachestat_refusing_unwritable_files_is_a_warning(tmp_path: Path) -> None:
    _tree(tmp_path, HEALTHY)
    report = run_checks(
        str(tmp_path / "proc"),
        str(tmp_path / "sys"),
        1000,
        cachestat_probe=lambda: None,
        refuses_readonly=lambda: True,
        mincore_probe=lambda: None,
    )
    assert report["cachestat"].status == "warning"
    assert "EPERM" in report["cachestat"].detail
    assert report.runnable


def test_inotify_limits_and_usage(tmp_path: Path) -> None:
    euid = os.geteuid()
    (tmp_path / "proc/4242/fd").mkdir(parents=True)
    os.symlink("anon_inode:inotify", tmp_path / "proc/4242/fd/7")
    os.symlink("/dev/null", tmp_path / "proc/4242/fd/0")
    watches = "".join(f"inotify wd:{n} ino:{n} sdev:fd00001 mask:fce\n" for n in range(3))
    report = _fake(
        tmp_path,
        {
            "proc/4242/fdinfo/7": f"pos:\t0\nflags:\t02004000\n{watches}",
            "proc/sys/fs/inotify/max_user_watches": "8192\n",
        },
        euid=euid,
    )
    inotify = report["inotify"]
    assert inotify.status == "warning"
    assert f"max_user_watches 8192 (3 used by uid {euid})" in inotify.detail
    assert "max_user_instances 128 (1 used)" in inotify.detail
    assert "sysctl fs.inotify.max_user_watches=" in (inotify.fix or "")
    assert report.runnable
    full = _fake(tmp_path, {"proc/sys/fs/inotify/max_user_instances": "1\n"}, euid=euid)
    assert full["inotify"].status == "unavailable"
    assert not full.runnable


def test_a_kernel_without_inotify(tmp_path: Path) -> None:
    report = _fake(tmp_path, {"proc/sys/fs/inotify": None})
    assert report["inotify"].status == "unavailable"
    assert "CONFIG_INOTIFY_USER" in (report["inotify"].fix or "")
    assert not report.runnable


def test_writeback_counters_fall_back_to_meminfo(tmp_path: Path) -> None:
    report = _fake(tmp_path, {"proc/vmstat": "nr_free_pages 5\n"})
    assert report["writeback"].status == "warning"
    assert "nr_dirty is missing" in report["writeback"].detail
    assert report.runnable
    gone = _fake(tmp_path, {"proc/vmstat": None, "proc/meminfo": None})
    assert gone["writeback"].status == "unavailable"
    assert not gone.runnable


def test_a_running_kdamond_that_pages_out(tmp_path: Path) -> None:
    damon = "sys/kernel/mm/damon/admin/kdamonds/0"
    context = f"{damon}/contexts/0"
    report = _fake(
        tmp_path,
        {
            "proc/77/comm": "kdamond.0\n",
            "proc/78/comm": "kworker/0:1\n",
            f"{damon}/state": "on\n",
            f"{context}/operations": "paddr\n",
            f"{context}/schemes/0/action": "pageout\n",
            f"{context}/targets/0/regions/0/start": f"{4 << 30}\n",
            f"{context}/targets/0/regions/0/end": f"{7 << 30}\n",
        },
    )
    kdamond = report["kdamond"]
    assert kdamond.status == "warning"
    assert kdamond.detail == (
        "kdamond.0 running (kdamond 0: paddr pageout over 4.0-7.0 GiB): it evicts idle page"
        " cache, so REMOVED items will come that nobody caused"
    )
    assert "kdamonds/0/state" in (kdamond.fix or "")
    monitoring = _fake(tmp_path, {f"{context}/schemes/0/action": "stat\n"})
    assert monitoring["kdamond"].status == "ok"
    assert "monitoring only" in monitoring["kdamond"].detail
    stopped = _fake(tmp_path, {f"{damon}/state": "off\n", "proc/77/comm": "bash\n"})
    assert stopped["kdamond"].status == "ok"
    assert stopped["kdamond"].detail.startswith("no kdamond running")


def test_damon_reclaim_module(tmp_path: Path) -> None:
    report = _fake(tmp_path, {"sys/module/damon_reclaim/parameters/enabled": "Y\n"})
    assert report["kdamond"].status == "warning"
    assert "DAMON_RECLAIM enabled" in report["kdamond"].detail


def test_fanotify_from_the_kernel_config(tmp_path: Path) -> None:
    no_sysctl: dict[str, str | None] = {"proc/sys/fs/fanotify": None}
    assert _fake(tmp_path, no_sysctl)["fanotify"].status == "warning"  # nothing tells
    with gzip.open(tmp_path / "proc/config.gz", "wt") as f:
        f.write("CONFIG_INOTIFY_USER=y\nCONFIG_FANOTIFY=y\n")
    assert _fake(tmp_path, no_sysctl)["fanotify"].status == "ok"
    assert _fake(tmp_path, no_sysctl, euid=1000)["fanotify"].status == "unavailable"
    with gzip.open(tmp_path / "proc/config.gz", "wt") as f:
        f.write("# CONFIG_FANOTIFY is not set\n")
    assert _fake(tmp_path, no_sysctl)["fanotify"].status == "unavailable"
    (tmp_path / "proc/config.gz").write_bytes(gzip.compress(b"CONFIG_FANOTIFY=y\n")[:12])
    assert _fake(tmp_path, no_sysctl)["fanotify"].status == "warning"  # truncated: no crash
    old = _fake(tmp_path, {"proc/sys/kernel/osrelease": "5.4.0\n"})
    assert old["fanotify"].status == "unavailable"
    assert "FAN_RENAME" in old["fanotify"].detail
    assert "5.17" in old["fanotify"].detail


def test_root_without_capabilities_cannot_use_the_exact_set(tmp_path: Path) -> None:
    no_sys_admin = f"{0x1FFFFFFFFF & ~(1 << 21):016x}"
    report = _fake(tmp_path, {"proc/self/status": f"CapEff:\t{no_sys_admin}\n"})
    assert report["root"].status == "warning"
    assert "without CAP_SYS_ADMIN" in report["root"].detail
    assert report["exact"].detail.startswith("needs root: this is root (uid 0) without")
    assert report["fanotify"].status == "unavailable"


def test_empty_and_malformed_trees_never_crash(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    empty = run_checks(
        str(tmp_path / "proc"),
        str(tmp_path / "sys"),
        0,
        cachestat_probe=lambda: None,
        refuses_readonly=lambda: False,
        mincore_probe=lambda: None,
    )
    assert [check.name for check in empty.checks] == NAMES
    assert empty["tracefs"].status == "warning"
    assert "cannot tell" in empty["tracefs"].detail
    assert empty["tracepoints"].detail.startswith("cannot tell")
    assert empty["cachestat"].detail == "works (an unknown Linux version; Linux >= 6.5 has it)"
    assert not empty.runnable  # no inotify, no counters
    # Directories where files belong, garbage where numbers belong, an fd without fdinfo.
    odd = tmp_path / "odd"
    _tree(odd, {name: text for name, text in HEALTHY.items() if name != "proc/mounts"})
    _tree(odd, {"proc/sys/fs/inotify/max_user_watches": "lots\n", "proc/self/status": "CapEff: zz"})
    (odd / "proc/mounts").mkdir()
    (odd / "proc/9/comm").mkdir(parents=True)
    (odd / "proc/9/fd").mkdir()
    os.symlink("anon_inode:inotify", odd / "proc/9/fd/3")
    report = run_checks(
        str(odd / "proc"),
        str(odd / "sys"),
        os.geteuid(),
        cachestat_probe=lambda: None,
        refuses_readonly=lambda: False,
        mincore_probe=lambda: None,
    )
    assert "max_user_watches unknown (at least 0 used" in report["inotify"].detail
    assert report["tracefs"].detail.startswith("not mounted; mountable")
    assert report["kdamond"].status == "ok"
    assert report.runnable


def test_cli_exit_code_1_when_the_unprivileged_set_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> Report:
        return _fake(tmp_path, cachestat="Function not implemented")

    monkeypatch.setattr(_doctor, "run_checks", broken)
    assert _cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "cachestat    unavailable  the call fails on Linux 6.18" in out
    assert out.splitlines()[-1].startswith("the unprivileged sources cannot run here")
    assert _cli.main(["doctor", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["auto"] == list(resolve_sources("auto"))
