"""The exact-set latency benchmark keeps running: a tiny run, checked for shape only."""

from __future__ import annotations

from pathlib import Path

from benchrun import run_bench


def test_exact_latency_benchmark_runs_and_reports_json(tmp_path: Path) -> None:
    report = run_bench(
        "exact_latency.py", "--pages", "50", "--gap", "0.001", "--dir", str(tmp_path)
    )
    assert report["benchmark"] == "exact_latency"
    assert report["sources"] == ["inotify", "tracepoints", "residency"]
    assert report["pages_read"] == 50 and report["pages_reported"] > 0
    latency = report["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
