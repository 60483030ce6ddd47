"""The benchmarks keep running: a small run of each, checked for shape, never for speed."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report


def test_store_ingest_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "store_ingest")
    assert set(report["scenarios"]) == {"single_pages", "runs", "churn", "drain"}
    for scenario in report["scenarios"].values():
        assert scenario["seconds"] > 0 and scenario["ratio_vs_naive"] > 0
    memory = report["memory"]
    assert memory["bytes_per_pending_page"] > 0
    # A stalled consumer: ten times the observations, the same pending pages.
    stalled = memory["stalled"]
    assert stalled["pending_pages_after"] == stalled["pending_pages_before"]
