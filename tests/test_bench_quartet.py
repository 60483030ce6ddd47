"""The Quartet benchmark keeps running: a tiny run, checked for shape and bookkeeping, never
for speed or for its goal.

Needs root (memory cgroups, the exact set of sources) and Dask distributed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from benchrun import SuiteRun, bench_report, run_bench

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (memory cgroups, tracefs)"),
]

WORKERS, PER_JOB, JOBS, MIB = 2, 4, 3, 1 << 20


@pytest.mark.parametrize("via", ["daemon", "embedded"])
def test_quartet_benchmark_runs_and_reports_json(
    bench_suite: SuiteRun, tmp_path: Path, via: str
) -> None:
    if via == "daemon":  # the smoke run of every benchmark has these sizes
        report = bench_report(bench_suite.report, "quartet")
    else:
        report = run_bench(
            "quartet.py",
            *("--workers", str(WORKERS), "--files-per-job", str(PER_JOB), "--jobs", str(JOBS)),
            *("--file-mib", "1", "--overlaps", "0.5,1", "--repeat", "1", "--gap", "0.5"),
            *("--via", via, "--detail", "--dir", str(tmp_path)),
            timeout=120,
        )
        assert not list(tmp_path.iterdir())  # the replicas were removed
    assert report["benchmark"] == "quartet"
    parameters = report["parameters"]
    assert parameters["via"] == via
    assert parameters["workers"] == WORKERS and parameters["file_bytes"] == MIB
    assert parameters["cache_bytes_per_worker"] == 2 * PER_JOB * MIB // WORKERS
    # Overlap 0.5 needs the most fresh files: 4 + 2 x 2.
    assert report["dataset"] == {"files": 8, "replicas": WORKERS, "bytes_per_replica": 8 * MIB}
    assert set(report["overlaps"]) == {"0.5", "1"}
    for name, overlap in report["overlaps"].items():
        kept = round(float(name) * PER_JOB)
        assert overlap["reread_fraction"] == round((JOBS - 1) * kept / (JOBS * PER_JOB), 4)
        for key in ("hit_rate_raise", "device_bytes_ratio", "completion_ratio", "cpu_ratio"):
            assert key in overlap
        runs = overlap["runs"]
        assert set(runs) == {"default", "cache_aware"}
        (default,) = runs["default"]
        (aware,) = runs["cache_aware"]
        for placement, run in runs.items():
            check_run(run[0], aware=placement == "cache_aware", kept=kept)
            assert overlap[placement]["hit_rate"] == run[0]["hit_rate"]
        # The daemon runs (and its CPU counts) only while cache-aware placement runs.
        assert default["daemon_cpu_seconds"] == 0 and aware["daemon_cpu_seconds"] >= 0
        if via == "embedded":
            assert aware["daemon_cpu_seconds"] == 0
        for run in (default, aware):
            assert run["cpu_seconds"] == pytest.approx(
                run["worker_cpu_seconds"] + run["daemon_cpu_seconds"], abs=0.02
            )
        # Both placements ran the same job mix.
        for mine, theirs in zip(default["jobs"], aware["jobs"], strict=True):
            assert sorted(t["path"] for t in mine["records"]) == sorted(
                t["path"] for t in theirs["records"]
            )
    goal = report["goal"]
    assert goal["met"] is None  # 2 workers: not the goal's point
    assert goal["overlap"] == 0.5 and goal["min_hit_rate_raise"] == 0.5


def check_run(run: dict[str, Any], *, aware: bool, kept: int) -> None:
    """Every task accounted for, hits within bytes read, the job mix as asked."""
    jobs = run["jobs"]
    assert len(jobs) == JOBS and len(run["job_seconds"]) == JOBS
    assert run["tasks"] == JOBS * PER_JOB and run["bytes_read"] == JOBS * PER_JOB * MIB
    assert 0 <= run["hit_bytes"] <= run["bytes_read"]
    assert 0 <= run["cachestat_hit_bytes"] <= run["bytes_read"]
    assert 0 <= run["hit_rate"] <= 1 and run["device_read_bytes"] >= 0
    assert sum(run["tasks_per_worker"].values()) == run["tasks"]
    assert set(run["tasks_per_worker"]) <= {str(n) for n in range(WORKERS)}
    assert set(run["cgroups"]) == {str(n) for n in range(WORKERS)}
    assert all(group["samples"] > 0 for group in run["cgroups"].values())
    assert run["job_hit_rates"] == [
        round(job["hit_bytes"] / job["bytes_read"], 4) for job in run["jobs"]
    ]
    assert run["completion_seconds"] == pytest.approx(sum(run["job_seconds"]), abs=0.01)
    assert run["cached_before"] < 0.01 and run["reporters"] is aware
    if aware:
        assert run["board_cached_bytes_before"] == 0
        assert 0 <= run["placed_as_planned"] <= run["planned_tasks"] <= run["tasks"]
    else:
        assert run["planned_tasks"] == 0
    previous: set[str] = set()
    for index, job in enumerate(jobs):
        records = job["records"]
        assert job["tasks"] == len(records) == PER_JOB and job["bytes_read"] == PER_JOB * MIB
        assert job["hit_bytes"] == sum(max(0, t["bytes"] - t["device_bytes"]) for t in records)
        for task in records:
            assert task["bytes"] == MIB and task["device_bytes"] >= 0
            assert 0 <= task["cachestat_bytes"] <= MIB
        paths = {task["path"] for task in records}
        assert len(paths) == PER_JOB
        if index:
            assert len(paths & previous) == kept  # the overlap with the job before
        previous = paths
    # The first job finds nothing cached: the cache was emptied before the configuration.
    assert jobs[0]["cachestat_hit_bytes"] == 0
