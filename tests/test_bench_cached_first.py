"""The cached_first benchmark keeps running: tiny trees, checked for shape, never for speed."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report


def test_cached_first_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "cached_first")
    assert report["benchmark"] == "cached_first_picks"
    assert [r["files"] for r in report["results"]] == [50, 200]
    for result in report["results"]:
        assert result["picked"] == result["files"]  # every file once
        assert result["from_cache"] == result["cached_files"] > 0  # the read ones first
        assert result["pick_microseconds"] > 0 and result["rescan_pick_microseconds"] > 0
    assert report["growth"]["files"] == 4.0
    assert report["growth"]["cached_first"] > 0 and report["growth"]["rescan"] > 0
