"""The exact-set latency benchmark keeps running: a tiny run, checked for shape only."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report


def test_exact_latency_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "exact_latency")
    assert report["benchmark"] == "exact_latency"
    assert report["sources"] == ["inotify", "tracepoints", "residency"]
    assert report["pages_read"] == 50 and report["pages_reported"] > 0
    latency = report["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
