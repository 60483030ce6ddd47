"""The scan benchmark keeps running: a small tree, checked for shape, never for speed."""

from __future__ import annotations

from pathlib import Path

from benchrun import SuiteRun, bench_report


def test_scan_tree_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "scan_tree")
    assert report["benchmark"] == "scan_tree"
    assert report["parameters"]["files"] == 200 and report["parameters"]["made"]
    assert not Path(report["parameters"]["tree"]).exists()  # made fresh, then removed
    assert set(report["results"]) == {"warm", "evicted"}
    for state in report["results"].values():
        assert state["aioduet_seconds"] > 0
        assert set(state["all_seconds"]) == set(report["tools"]["commands"])
        for peer in ("vmtouch", "fincore"):
            if state[f"{peer}_seconds"] is not None:
                assert state[f"ratio_vs_{peer}"] > 0
    assert report["tools"]["fincore_mode"] in {"-R", "find|xargs"}
    assert set(report["startup_seconds"]) == {"python", "aioduet_scan_help"}
    assert all(seconds > 0 for seconds in report["startup_seconds"].values())
    assert report["machine"]["load_average_1min_before"] >= 0
    assert "vmtouch" in report["tools"]["commands"]  # .ci/run installs it
