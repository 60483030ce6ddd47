"""The idle CPU benchmark keeps running: a tiny run, checked for shape, never for speed."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report


def test_idle_cpu_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "idle_cpu")
    assert report["benchmark"] == "idle_cpu"
    assert report["sources"] == ["inotify", "residency", "writeback"]
    assert report["idle"]["cpu_seconds"] >= 0
    eviction = report["eviction"]
    assert eviction["hot_files"] == 3
    assert eviction["max_seconds"] > 0 and eviction["bound_seconds"] > 0
    assert report["walk"]["bound_seconds"] > 0
