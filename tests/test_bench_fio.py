"""The fio overhead benchmark keeps running: a tiny run, checked for shape, never for speed.

Needs fio (``.ci/run`` installs it) and root (the exact set)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fio_overhead_benchmark_runs_and_reports_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "fio_overhead.py")),
            *("--runtime", "1", "--repeat", "1", "--size", "8M", "--dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    report = json.loads(result.stdout)
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
