"""Smoke test of bench/tracepoint_rate.py: tiny sizes, JSON shape only."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report


def test_tracepoint_rate_json_shape(bench_suite: SuiteRun) -> None:
    result = bench_report(bench_suite.report, "tracepoint_rate")
    assert result["benchmark"] == "tracepoint_rate"
    assert result["lost"] == 0
    assert result["events"] >= result["expected_events"] == 512
    for reader in ("source", "bare"):
        assert result[reader]["events_per_second"] > 0
        assert result[reader]["cpu_us_per_event"] > 0
    assert result["cost_ratio"] > 0
