"""The piggy-back benchmark keeps running: a tiny run, checked for shape, never for speed.

Needs root (memory cgroups, the exact set the tools pick with ``--sources auto``) and the
tools of ``examples/``."""

from __future__ import annotations

import os

import pytest
from benchrun import ROOT, SuiteRun, bench_report

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (memory cgroups)")

TOOLS = {"three": {"backup", "scrub", "index"}, "two": {"backup", "scrub"}}
TOOLS["staggered"] = TOOLS["three"]


def test_piggyback_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "piggyback")
    assert report["benchmark"] == "piggyback"
    assert report["parameters"]["tools"] == str(ROOT / "examples")
    dataset = report["dataset"]
    assert dataset["files"] > 50 and 7 << 20 < dataset["bytes"] <= 8 << 20
    assert set(report["scenarios"]) == set(TOOLS)
    for name, scenario in report["scenarios"].items():
        assert scenario["read_ratio"] > 0 and scenario["wall_ratio"] > 0
        assert scenario["goal_read_ratio"] == (0.40 if len(TOOLS[name]) == 3 else None)
        for side in ("without", "with"):
            (run,) = scenario["runs"][side]
            assert set(run["tools"]) == TOOLS[name]
            for tool in run["tools"].values():  # every tool processed every byte of every file
                assert tool["files"] == dataset["files"]
                assert tool["bytes"] == dataset["bytes"]
                assert tool["read_bytes"] >= 0 and tool["end"] >= tool["start"] >= 0
            # The dataset was evicted, so someone read it from the device.
            assert run["cached_before"] < 0.01
            assert run["device_read_bytes"] >= dataset["bytes"] // 2
            assert run["tools_read_bytes"] > 0 and run["cpu_seconds"] > 0
            assert run["cgroup"]["cache_budget_bytes"] == dataset["bytes"] // 4
            assert run["cgroup"]["samples"] > 0
    staggered = report["scenarios"]["staggered"]["runs"]["with"][0]["tools"]
    starts = sorted(tool["start"] for tool in staggered.values())
    assert starts[0] == 0.0 and starts[1] >= 0.5 and starts[2] >= 1.0  # one every --stagger


def test_piggyback_through_the_daemon_reports_both_sides(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "piggyback")  # the smoke run has --via both
    assert report["parameters"]["via"] == ["embedded", "daemon"]
    dataset = report["dataset"]
    three = report["scenarios"]["three"]
    assert set(three["runs"]) == {"without", "with", "daemon"}
    for key in ("read_ratio", "daemon_read_ratio", "daemon_wall_ratio", "daemon_cpu_ratio"):
        assert three[key] > 0
    assert set(three["daemon_vs_embedded"]) == {"device_read_bytes", "wall_seconds", "cpu_seconds"}
    assert all(value > 0 for value in three["daemon_vs_embedded"].values())
    (run,) = three["runs"]["daemon"]
    for tool in run["tools"].values():  # every tool processed every byte of every file
        assert tool["files"] == dataset["files"] and tool["bytes"] == dataset["bytes"]
    daemon = run["daemon"]
    assert daemon["returncode"] == 0 and daemon["cpu_seconds"] > 0
    assert daemon["start_seconds"] > 0 and daemon["max_rss_bytes"] > 0
    # The CPU of a side with the daemon is the tools' and the daemon's.
    assert run["cpu_seconds"] == round(run["tools_cpu_seconds"] + daemon["cpu_seconds"], 2)
    assert "daemon" not in three["runs"]["with"][0]
    assert run["device_read_bytes"] >= dataset["bytes"] // 2 and run["cached_before"] < 0.01
