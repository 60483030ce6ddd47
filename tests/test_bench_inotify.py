"""The inotify rate benchmark keeps running: a tiny run, checked for shape, never for speed."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report


def test_inotify_rate_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "inotify_rate")
    assert report["benchmark"] == "inotify_rate"
    assert set(report["readers"]) == {"bare", "source", "pyinotify"}
    for summary in report["readers"].values():
        assert summary["steps"]
        for step in summary["steps"]:
            assert step["generated"] > 0 and step["generated_per_second"] > 0
            assert step["received"] >= 0 and step["overflows"] >= 0
        assert summary["sustained_events_per_second"] >= 0
    assert set(report["ratios"]) == {"source", "pyinotify"}
    assert {"sustained_vs_bare", "cpu_efficiency_vs_bare"} <= set(report["ratios"]["source"])
    assert report["generator_max_per_second"] > 0
