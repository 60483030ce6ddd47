"""``python -m bench``: every benchmark runs, one report holds them with the machine and the
comparisons with their peers, and docs/performance.md's tables and plots are made from it.

The smoke run is the session's ``bench_suite`` fixture (conftest.py); the other benchmark
tests read their parts of the same run.
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from benchrun import ROOT, SuiteRun, run_suite

sys.path.insert(0, str(ROOT / "bench"))
import _report
from _suite import ENTRIES

SMOKE = {entry.name for entry in ENTRIES if "smoke" in entry.args}

#: The comparisons the suite must hold: (benchmark, the peer it is measured against).
PEERS = {
    ("inotify_rate", "bare ctypes reader"),
    ("tracepoint_rate", "bare ring-buffer parse"),
    ("scan_tree", "vmtouch"),
    ("scan_tree", "fincore"),
    ("fio_overhead", "without aioduet"),
    ("fio_record", "without aioduet"),
    ("piggyback", "without aioduet"),
    ("piggyback", "embedded frameworks"),
    ("daemon_items", "embedded framework"),
    ("quartet", "Dask's placement"),
    ("store_ingest", "naive store"),
    ("cached_first", "cachestat rescan"),
}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file (its IHDR chunk); fails on anything else."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_every_benchmark_runs_once_in_one_report(bench_suite: SuiteRun) -> None:
    report = bench_suite.report
    assert bench_suite.returncode == 0, bench_suite.stderr[-4000:]
    assert report["benchmark"] == "all" and report["profile"] == "smoke"
    assert set(report["benchmarks"]) == SMOKE
    for name, record in report["benchmarks"].items():
        assert "error" not in record, (name, record.get("stderr_tail"))
        assert record["left_behind"] == [], name  # each cleaned its fresh directory
        assert record["seconds"] > 0 and record["returncode"] == 0
        assert record["report"]["benchmark"] in (record["script"][:-3], "cached_first_picks")
    machine = report["machine"]
    for key in ("kernel", "cpus", "cpu_model", "memory_bytes", "python", "load_average_1min"):
        assert machine[key] is not None, key
    assert machine["filesystem"]["type"] == "ext4"  # the pytest directory is under /tmp
    assert report["aioduet"] and report["wall_seconds"] > 0
    assert "[14/14] soak" in bench_suite.stderr  # progress, one line per benchmark


def test_each_comparison_is_with_its_peer_of_the_same_run(bench_suite: SuiteRun) -> None:
    rows = bench_suite.report["comparisons"]
    assert [row for row in rows if "error" in row] == []
    assert {(row["benchmark"], row["peer_name"]) for row in rows} >= PEERS
    for row in rows:
        record = bench_suite.report["benchmarks"][row["benchmark"]]
        assert record["report"]  # from this run
        if row["aioduet"] and row["peer"]:
            assert row["ratio"] > 0
        assert row["better"] in ("lower", "higher")
    scan = bench_suite.report["benchmarks"]["scan_tree"]["report"]["results"]["warm"]
    (vmtouch,) = (r for r in rows if r["peer_name"] == "vmtouch" and "warm" in r["measure"])
    assert vmtouch["aioduet"] == scan["aioduet_seconds"]
    assert vmtouch["peer"] == scan["vmtouch_seconds"]


def test_the_page_tables_and_plots_are_made_from_the_run(bench_suite: SuiteRun) -> None:
    page = (bench_suite.work / "performance.md").read_text()
    blocks = _report.blocks_of(page)
    assert set(blocks) == set(_report.BLOCKS)  # the page shows every table the runner makes
    for name, body in blocks.items():
        assert body.strip(), name
        assert "Not measured" not in body and "Not shown" not in body, (name, body)
    report = bench_suite.report
    assert f"Profile `smoke`, {report['date']}" in blocks["run"]
    assert blocks["summary"].count("\n| `") == len(report["comparisons"])
    scan = report["benchmarks"]["scan_tree"]["report"]["results"]["evicted"]
    assert f"| evicted | {_report.sig(scan['aioduet_seconds'])} s |" in blocks["scan_tree"]
    for plot in ("piggyback", "overhead"):
        link = f"(img/{plot}.png)"
        assert link in page, plot
        width, height = png_size(bench_suite.work / "img" / f"{plot}.png")
        assert width >= 600 and height >= 200


def test_check_finds_a_table_edited_by_hand(bench_suite: SuiteRun, tmp_path: Path) -> None:
    shutil.copy(bench_suite.work / "performance.md", tmp_path / "performance.md")
    shutil.copytree(bench_suite.work / "img", tmp_path / "img")
    check = (
        *("--render", str(bench_suite.work / "smoke.json"), "--check"),
        *("--docs", str(tmp_path / "performance.md"), "--plots", str(tmp_path / "img")),
    )
    assert run_suite(*check).returncode == 0
    page = (tmp_path / "performance.md").read_text()
    body = _report.blocks_of(page)["exact_latency"]
    (tmp_path / "performance.md").write_text(page.replace(body, body.replace(" ms", " µs", 1)))
    result = run_suite(*check)
    assert result.returncode == 1
    assert "'exact_latency' differs" in result.stderr


def test_the_committed_page_is_what_the_committed_report_makes() -> None:
    """docs/performance.md holds no hand-edited figure: its tables are those its report makes."""
    page = (ROOT / "docs" / "performance.md").read_text()
    profile = _report.blocks_of(page)["run"].split("`")[1]
    result = run_suite("--render", str(ROOT / "bench" / "results" / f"{profile}.json"), "--check")
    assert result.returncode == 0, result.stderr


def test_a_page_naming_an_unknown_block_is_an_error() -> None:
    page = "text\n<!-- bench:nonesuch -->\nold\n<!-- /bench:nonesuch -->\n"
    with pytest.raises(ValueError, match="nonesuch"):
        _report.fill(page, {"benchmarks": {}}, {})


def test_a_benchmark_that_did_not_run_says_why_in_its_block() -> None:
    report: dict[str, Any] = {
        "profile": "quick",
        "benchmarks": {"soak": {"script": "soak.py", "skipped": "needs root"}},
    }
    page = (
        "<!-- bench:soak -->\n<!-- /bench:soak -->\n<!-- bench:flood -->\n<!-- /bench:flood -->\n"
    )
    blocks = _report.blocks_of(_report.fill(page, report, {}))
    assert blocks["soak"] == "*Not measured: `soak` needs root.*\n"
    assert blocks["flood"] == "*Not measured: `flood` not run in this quick run.*\n"


def test_a_report_missing_a_figure_gives_an_error_row_not_a_crash() -> None:
    report = {"benchmarks": {"scan_tree": {"report": {"results": {"warm": {}}}}}}
    (row,) = _report.comparisons(report)
    assert row["benchmark"] == "scan_tree" and "KeyError" in row["error"]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.4372, "0.437"), (0.9, "0.900"), (0.000343, "0.000343"), (1.0, "1.00"), (24.04, "24.0")],
)
def test_figures_keep_three_significant_digits(value: float, text: str) -> None:
    assert _report.sig(value) == text


def test_bad_options_are_refused_with_what_is_known(tmp_path: Path) -> None:
    result = run_suite("--only", "scan_tree,nonesuch", "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2
    assert "unknown benchmark(s) nonesuch" in result.stderr and "scan_tree" in result.stderr
    assert not (tmp_path / "x.json").exists()
    result = run_suite("--check")
    assert result.returncode == 2 and "--check needs --render" in result.stderr
    result = run_suite("--render", str(tmp_path / "none.json"))
    assert result.returncode == 2 and "cannot read the report" in result.stderr


def test_the_quick_profile_runs_every_benchmark_the_smoke_one_does() -> None:
    quick = {entry.name for entry in ENTRIES if "quick" in entry.args}
    full = {entry.name for entry in ENTRIES if "full" in entry.args}
    assert quick == full == SMOKE
    listing = run_suite("--quick", "--list")
    assert listing.returncode == 0
    assert [line.split()[0] for line in listing.stdout.splitlines()] == [e.name for e in ENTRIES]


def fake_entry(script: Path, timeout: float = 60.0) -> Any:
    """An entry that runs ``script`` (an absolute path) in every profile."""
    from _suite import Entry  # noqa: PLC0415

    return Entry(
        "fake", str(script), "a fake", "nobody", root=False, dir_flag="--dir",
        args={"smoke": ("--flag",)}, timeout={"smoke": timeout},
    )  # fmt: skip


def write_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake.py"
    script.write_text("import json, os, subprocess, sys, time\n" + body)
    return script


def test_a_benchmark_that_fails_keeps_its_last_lines(tmp_path: Path) -> None:
    import run_all  # noqa: PLC0415

    script = write_script(tmp_path, "print('step 1', file=sys.stderr)\nsys.exit(3)\n")
    record = run_all.run_entry(fake_entry(script), "smoke", tmp_path)
    assert record["error"] == "exited with 3" and record["stderr_tail"] == ["step 1"]
    assert record["argv"][1:3] == ["--flag", "--dir"] and record["options"] == ["--flag"]
    assert "report" not in record and record["left_behind"] == []
    script = write_script(tmp_path, "print('not json')\n")
    record = run_all.run_entry(fake_entry(script), "smoke", tmp_path)
    assert record["error"].startswith("its output is not one JSON object")


def test_a_benchmark_is_stopped_at_its_timeout_with_its_children(tmp_path: Path) -> None:
    import run_all  # noqa: PLC0415

    pid_file = tmp_path / "child.pid"
    script = write_script(
        tmp_path,
        f"child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n",
    )
    record = run_all.run_entry(fake_entry(script, timeout=2), "smoke", tmp_path)
    assert record["error"] == "timed out after 2 s" and record["seconds"] < 30
    child = int(pid_file.read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


def test_children_left_running_are_ended_and_reported(tmp_path: Path) -> None:
    import run_all  # noqa: PLC0415

    script = write_script(
        tmp_path,
        "subprocess.Popen(['sleep', '300'], stderr=subprocess.DEVNULL)\n"
        "print(json.dumps({'benchmark': 'fake'}))\n",
    )
    record = run_all.run_entry(fake_entry(script), "smoke", tmp_path)
    assert record["report"] == {"benchmark": "fake"}
    (left,) = record["left_running"]  # "pid command", killed after a grace of 5 s
    assert left.endswith(" sleep 300") and record["seconds"] < 30


def test_a_run_without_matplotlib_stops_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import run_all  # noqa: PLC0415

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    out = tmp_path / "report.json"
    assert run_all.main(["--quick", "--only", "store_ingest", "--out", str(out)]) == 2
    assert not out.exists()  # nothing ran
    assert run_all.main(["--quick", "--list"]) == 0
