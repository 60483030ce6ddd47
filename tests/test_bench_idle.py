"""The idle CPU benchmark keeps running: a tiny run, checked for shape, never for speed."""

from __future__ import annotations

from pathlib import Path

from benchrun import run_bench


def test_idle_cpu_benchmark_runs_and_reports_json(tmp_path: Path) -> None:
    report = run_bench(
        "idle_cpu.py",
        "--files",
        "200",
        "--dirs",
        "4",
        "--seconds",
        "0.5",
        "--hot",
        "3",
        "--interval",
        "0.2",
        "--dir",
        str(tmp_path),
    )
    assert report["benchmark"] == "idle_cpu"
    assert report["sources"] == ["inotify", "residency", "writeback"]
    assert report["idle"]["cpu_seconds"] >= 0
    eviction = report["eviction"]
    assert eviction["hot_files"] == 3
    assert eviction["max_seconds"] > 0 and eviction["bound_seconds"] > 0
    assert report["walk"]["bound_seconds"] > 0
