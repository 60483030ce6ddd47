"""The fio overhead benchmark keeps running: a tiny run, checked for shape, never for speed.

Needs fio (``.ci/run`` installs it) and root (the exact set)."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report


def test_fio_overhead_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "fio_overhead")
    assert report["benchmark"] == "fio_overhead"
    assert report["parameters"]["sources"] == "exact"
    assert set(report["workloads"]) == {"randread", "seqwrite"}
    for workload in report["workloads"].values():
        assert workload["ratio"] > 0
        assert set(workload["bw_bytes"]) == set(workload["iops"]) == {"without", "with"}
        assert len(workload["runs"]["without"]) == len(workload["runs"]["with"]) == 1
        framework = workload["framework"]
        assert framework["cpu_seconds"] >= 0
        assert framework["lost"] >= 0 and framework["items"] >= 0
        assert "tracepoints" in framework["observations"]
    assert report["workloads"]["randread"]["runs"]["with"][0]["cached_fraction"] > 0


def test_fio_overhead_of_a_recording_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "fio_record")
    assert report["parameters"]["watcher"] == "record every 0.2 s"
    recorder = report["workloads"]["randread"]["framework"]
    assert recorder["frames"] >= 3  # 1 s of fio plus its pre-read, a frame every 0.2 s
    assert recorder["recording_bytes"] > 0
    assert recorder["overflows"] == 0
