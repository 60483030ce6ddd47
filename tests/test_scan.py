"""``aioduet scan``: residency per file, checked against cachestat and util-linux fincore."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import run_aioduet
from pagecache import cached, evict, opened, read_pages, write_clean

from aioduet import _kernel
from aioduet._cli import main
from aioduet._scan import JSON_KEYS, Progress, Residency, Scan, Totals, human_size, json_line
from aioduet._scan_run import run_scan
from aioduet.errors import SourceUnavailable

ROOT = Path(__file__).resolve().parent.parent
PAGE = _kernel.PAGE_SIZE
COUNTS = ("cached", "dirty", "writeback")


def records(stdout: str) -> dict[str, dict[str, object]]:
    """``--json`` lines by path (and the total under ``None``)."""
    found = {}
    for line in stdout.splitlines():
        record = json.loads(line)
        found[record["path"]] = record
    return found


def snapshot(paths: list[Path]) -> dict[str, tuple[int, int, int]]:
    """cachestat's (cached, dirty, writeback) of each file, right now."""
    result = {}
    for path in paths:
        with opened(path) as fd:
            stat = _kernel.cachestat(fd)
        result[str(path)] = (stat.cache, stat.dirty, stat.writeback)
    return result


def mixed_tree(root: Path) -> list[Path]:
    """Files of 1-24 pages: some read whole, some in part, some evicted, one partial page."""
    paths = []
    for number in range(24):
        path = write_clean(root / f"d{number % 3}" / f"f{number}", 1 + number)
        if number % 3 == 0:
            read_pages(path)
        elif number % 3 == 1:
            read_pages(path, number // 2, 1 + number // 3)
        paths.append(path)
    odd = root / "d0" / "partial-page"
    odd.write_bytes(b"x" * (PAGE + 100))
    os.sync()
    paths.append(odd)
    (root / "empty").mkdir()
    return paths


def fincore_json(root: Path, paths: list[Path]) -> dict[str, int]:
    """Resident pages of each file as fincore reports them (-R where this fincore has it)."""
    has_recursive = (
        "--recursive"
        in subprocess.run(["fincore", "--help"], capture_output=True, text=True, check=False).stdout
    )
    targets = ["-R", str(root)] if has_recursive else [str(p) for p in paths]
    result = subprocess.run(
        ["fincore", "--json", "-b", "-o", "RES,PAGES,SIZE,FILE", *targets],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = json.loads(result.stdout)["fincore"]
    return {row["file"]: int(row["pages"]) for row in rows}


def test_json_agrees_page_for_page_with_cachestat_and_fincore(ext4_dir: Path) -> None:
    paths = mixed_tree(ext4_dir)
    # DAMON may evict between the runs: a file counts only if cachestat saw the same state
    # just before and just after both tools ran.
    tries = 0
    while tries < 3:
        tries += 1
        for number, path in enumerate(paths):
            if number % 3 == 0:
                read_pages(path)
        before = snapshot(paths)
        ours = run_aioduet("scan", "-R", "--json", str(ext4_dir), cwd=ROOT)
        theirs = fincore_json(ext4_dir, paths)
        after = snapshot(paths)
        stable = [str(p) for p in paths if before[str(p)] == after[str(p)]]
        if len(stable) >= len(paths) - 2:
            break
    assert len(stable) >= len(paths) - 2, f"the cache kept changing ({tries} tries)"
    assert ours.returncode == 0, ours.stderr
    got = records(ours.stdout)
    assert set(got) == {str(p) for p in paths}
    for line in ours.stdout.splitlines():
        assert list(json.loads(line)) == list(JSON_KEYS)
    for path in paths:
        record = got[str(path)]
        size = path.stat().st_size
        assert record["size"] == size and record["pages"] == -(-size // PAGE)
        assert isinstance(record["evicted"], int) and isinstance(record["recently_evicted"], int)
    assert any(before[p][0] for p in stable) and any(not before[p][0] for p in stable)
    for path in stable:
        assert tuple(got[path][key] for key in COUNTS) == before[path], path
        assert theirs[path] == before[path][0], path


def test_dirty_file_shows_dirty_pages(ext4_dir: Path) -> None:
    path = write_clean(ext4_dir / "dirty", 8)
    with opened(path, os.O_WRONLY) as fd:
        os.pwrite(fd, b"d" * 3 * PAGE, 2 * PAGE)
    before = snapshot([path])[str(path)]
    result = run_aioduet("scan", "--json", str(path), cwd=ROOT)
    after = snapshot([path])[str(path)]
    assert result.returncode == 0, result.stderr
    record = records(result.stdout)[str(path)]
    assert before[1] >= 3  # whole folios: at least the three pages written
    assert record["dirty"] in {before[1], after[1]}
    assert record["cached"] in {before[0], after[0]}
    os.sync()


def test_unreadable_and_refused_files_are_unknown_never_cached(ext4_dir: Path) -> None:
    """As uid 65534: no permission to open, or cachestat's EPERM, gives null counts."""
    os.chmod(ext4_dir, 0o755)
    secret = write_clean(ext4_dir / "secret", 4)
    os.chmod(secret, 0)  # open() fails with EACCES
    readonly = write_clean(ext4_dir / "readonly", 4)  # cachestat says EPERM
    own = write_clean(ext4_dir / "own", 4)
    os.chown(own, 65534, 65534)  # writable by nobody: cachestat answers
    closed = ext4_dir / "closed"
    write_clean(closed / "hidden", 2)
    os.chmod(closed, 0o700)  # nobody cannot list it
    read_pages(secret)
    read_pages(readonly)  # cached in truth: mincore would say so even to nobody
    evict(own)
    script = f"""
import os, sys
import anyio._backends._asyncio, uvloop  # imported while /root is still readable
from aioduet._cli import main
os.setgid(65534); os.setuid(65534)
sys.exit(main(["scan", "-R", "--json", "--total", {str(ext4_dir)!r}]))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stderr
    got = records(result.stdout)
    for path in (secret, readonly):
        record = got[str(path)]
        assert record["size"] == 4 * PAGE and record["pages"] == 4
        assert all(record[key] is None for key in JSON_KEYS[3:]), record
    assert got[str(own)]["cached"] == cached(own)
    assert str(closed / "hidden") not in got
    total = got[None]
    assert total["total"] is True and total["files"] == 3 and total["unknown"] == 2
    assert total["cached"] == got[str(own)]["cached"]
    summary = result.stderr.splitlines()[-1]
    assert "2 files unknown, 1 directory unreadable" in summary


def test_symlink_loops_do_not_hang_and_links_are_not_followed(ext4_dir: Path) -> None:
    real = write_clean(ext4_dir / "sub" / "real", 2)
    (ext4_dir / "sub" / "up").symlink_to("..")
    (ext4_dir / "self").symlink_to(".")
    (ext4_dir / "a").symlink_to("b")
    (ext4_dir / "b").symlink_to("a")
    (ext4_dir / "link-to-real").symlink_to(real)
    result = run_aioduet("scan", "-R", "--json", str(ext4_dir), timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert list(records(result.stdout)) == [str(real)]
    # A symlink given on the command line is followed, as fincore does.
    given = run_aioduet("scan", "--json", str(ext4_dir / "link-to-real"), cwd=ROOT)
    assert list(records(given.stdout)) == [str(ext4_dir / "link-to-real")]
    looped = run_aioduet("scan", str(ext4_dir / "a"), cwd=ROOT)
    assert looped.returncode == 2
    assert "Too many levels of symbolic links" in looped.stderr.splitlines()[-1]


def test_missing_path_is_a_usage_error(ext4_dir: Path) -> None:
    result = run_aioduet("scan", "-R", str(ext4_dir), str(ext4_dir / "missing"), cwd=ROOT)
    assert result.returncode == 2
    assert result.stdout == ""
    last = result.stderr.splitlines()[-1]
    assert f"cannot scan '{ext4_dir / 'missing'}': No such file or directory" in last
    assert run_aioduet("scan").returncode == 2


def test_directory_without_r_lists_only_its_own_files(ext4_dir: Path) -> None:
    top = write_clean(ext4_dir / "top", 1)
    write_clean(ext4_dir / "sub" / "deep", 1)
    flat = run_aioduet("scan", "--json", str(ext4_dir), cwd=ROOT)
    assert flat.returncode == 0, flat.stderr
    assert list(records(flat.stdout)) == [str(top)]
    deep = run_aioduet("scan", "-R", "--json", str(ext4_dir), cwd=ROOT)
    assert set(records(deep.stdout)) == {str(top), str(ext4_dir / "sub" / "deep")}


def test_non_regular_paths_are_skipped_with_exit_1(ext4_dir: Path) -> None:
    path = write_clean(ext4_dir / "f", 1)
    result = run_aioduet("scan", "--json", "/dev/null", str(path), cwd=ROOT)
    assert result.returncode == 1
    assert list(records(result.stdout)) == [str(path)]
    assert "1 path skipped (first: /dev/null: not a regular file" in result.stderr


def test_table_and_total(ext4_dir: Path) -> None:
    small = write_clean(ext4_dir / "small", 3)
    big = write_clean(ext4_dir / "big", 300)
    read_pages(big)
    out, err = io.StringIO(), io.StringIO()
    code = run_scan([str(ext4_dir)], recursive=False, as_json=False, total=True, out=out, err=err)
    assert code == 0, err.getvalue()
    assert err.getvalue() == ""  # not a terminal: no progress
    header, *rows, total = out.getvalue().splitlines()
    assert header.split() == [
        "RES", "CACHED", "PAGES", "SIZE", "DIRTY", "WRITEBACK", "EVICTED", "RECENT", "FILE",
    ]  # fmt: skip
    by_path = {row.split()[-1]: row.split() for row in rows}
    assert set(by_path) == {str(small), str(big)}
    assert by_path[str(small)][2:4] == ["3", "12K"]
    assert by_path[str(big)][2:4] == ["300", "1.2M"]
    # Columns line up: every row as long as the header up to the FILE column.
    width = header.index("FILE")
    assert all(row[width - 1] == " " and row[width - 2] != " " for row in rows)
    cells = total.split()
    assert cells[2:4] == ["303", "1.2M"]
    assert total.endswith("total: 2 files")
    assert int(cells[1]) <= 303
    # The same through the command line, in JSON.
    result = run_aioduet("scan", "--json", "--total", str(small), str(big), cwd=ROOT)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[-1]["path"] is None and lines[-1]["total"] is True
    assert lines[-1]["pages"] == 303 and lines[-1]["files"] == 2 and lines[-1]["unknown"] == 0
    assert lines[-1]["cached"] == sum(line["cached"] for line in lines[:-1])


def test_mincore_fallback_counts_cached_pages_in_windows(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_clean(ext4_dir / "f", 40)
    read_pages(path, 3, 5)
    read_pages(path, 30, 4)

    def missing(fd: int, offset: int = 0, length: int = 0) -> _kernel.CacheStat:
        raise SourceUnavailable(38, "cachestat is unavailable")

    windows: list[tuple[int, int]] = []
    real_mincore = _kernel.mincore

    def recording_mincore(fd: int, size: int, offset: int = 0) -> bytes:
        windows.append((offset, size))
        return real_mincore(fd, size, offset)

    truth = cached(path)
    monkeypatch.setattr(_kernel, "cachestat", missing)
    monkeypatch.setattr(_kernel, "mincore", recording_mincore)
    scan = Scan(recursive=True, window=16 * PAGE)
    (found,) = scan.run([str(ext4_dir)])
    assert scan.mincore_fallback
    assert found == Residency(str(path), 40 * PAGE, 40, truth, None, None, None, None)
    assert windows == [(0, 16 * PAGE), (16 * PAGE, 16 * PAGE), (32 * PAGE, 8 * PAGE)]
    assert json.loads(json_line(found))["dirty"] is None
    totals = Totals()
    totals.add(found)
    assert totals.value("cached") == truth and totals.value("dirty") is None
    with pytest.raises(ValueError, match="multiple"):
        Scan(window=PAGE + 1)
    # Through main(), the fallback is said once on stderr.
    assert main(["scan", str(path)]) == 0


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 13312, 5 << 30, None)] == [
        "0B", "1023B", "1K", "1.5K", "13K", "5G", "?",
    ]  # fmt: skip


def test_progress_redraws_in_place_and_clears() -> None:
    written: list[str] = []
    progress = Progress(written.append, interval=0)
    progress.clear()
    assert written == []  # nothing drawn, nothing to erase
    progress.update(4096)
    assert written[-1].startswith("\rscanned 4096 files in ")
    progress.clear()
    assert written[-1] == "\r\x1b[K"
    quiet = Progress(written.append, interval=3600)
    quiet.update(10)
    assert len(written) == 2


def small_tree(root: Path, directories: int, files: int) -> set[str]:
    """``directories`` directories of ``files`` one-page files, nested two deep; their paths."""
    paths = set()
    for number in range(directories):
        directory = root / f"d{number % 4}" / f"e{number}"
        directory.mkdir(parents=True)
        for index in range(files):
            path = directory / f"f{index}"
            path.write_bytes(b"x" * 100)
            paths.add(str(path))
    return paths


def test_parts_of_a_split_scan_report_each_file_and_problem_once(ext4_dir: Path) -> None:
    paths = small_tree(ext4_dir, 12, 5)
    alone = Scan(recursive=True)
    whole = {found.path for found in alone.run([str(ext4_dir)])}
    assert whole == paths
    parts = [Scan(recursive=True, parts=2, part=part) for part in (0, 1)]
    seen = [[found.path for found in scan.run([str(ext4_dir)])] for scan in parts]
    assert sorted(seen[0] + seen[1]) == sorted(paths)  # every file once
    assert seen[0] and seen[1]  # 12 directories: both parts have some (the salt is random)
    assert sum(scan.files for scan in parts) == len(paths)
    # Files given as paths are part 0's.
    given = sorted(paths)[0]
    assert [f.path for f in Scan(parts=2, part=1).run([given])] == []
    assert [f.path for f in Scan(parts=2, part=0).run([given])] == [given]
    with pytest.raises(ValueError, match="part"):
        Scan(parts=2, part=2)


def test_unreadable_directory_is_counted_once_across_parts(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small_tree(ext4_dir, 6, 2)
    closed = str(ext4_dir / "d2" / "e2")
    real_open = os.open

    def refusing_open(
        path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
    ) -> int:
        if path == closed:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", refusing_open)
    parts = [Scan(recursive=True, parts=2, part=part) for part in (0, 1)]
    for scan in parts:
        list(scan.run([str(ext4_dir)]))
    assert sum(scan.unreadable_dirs for scan in parts) == 1
    assert sum(scan.files for scan in parts) == 10


def test_command_line_split_in_two_processes_reports_each_file_once(ext4_dir: Path) -> None:
    """Through a pipe on two CPUs the scan forks: same lines, same totals, no mixed lines."""
    paths = small_tree(ext4_dir, 40, 60)  # 2,400 lines, far more than a pipe's buffer
    result = run_aioduet("scan", "-R", "--json", "--total", str(ext4_dir), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    got = [json.loads(line) for line in lines]  # a mixed line would not parse
    assert sorted(record["path"] for record in got[:-1]) == sorted(paths)
    total = got[-1]
    assert total["total"] is True and total["files"] == len(paths) and total["unknown"] == 0
    assert total["pages"] == len(paths)
    table = run_aioduet("scan", "-R", "--total", str(ext4_dir), cwd=ROOT)
    header, *rows, last = table.stdout.splitlines()
    assert header.split()[0] == "RES" and len(rows) == len(paths)
    assert last.endswith(f"total: {len(paths)} files")


def test_broken_pipe_stops_both_processes_quietly(ext4_dir: Path) -> None:
    small_tree(ext4_dir, 40, 60)
    with subprocess.Popen(
        [sys.executable, "-m", "aioduet", "scan", "-R", "--json", str(ext4_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        json.loads(process.stdout.readline())
        process.stdout.close()
        code = process.wait(timeout=60)
        err = process.stderr.read()
    assert code == 1
    assert b"Traceback" not in err and b"error" not in err.lower(), err


def test_scan_starts_without_the_framework() -> None:
    """``scan`` is timed against vmtouch start-up included: no anyio, attrs or framework."""
    script = (
        "import sys, aioduet._cli;"
        " print(sorted(m for m in ('anyio', 'attrs', 'uvloop', 'aioduet._framework')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
