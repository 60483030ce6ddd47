"""The exact-set latency benchmark keeps running: a tiny run, checked for shape only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_exact_latency_benchmark_runs_and_reports_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "exact_latency.py")),
            *("--pages", "50", "--gap", "0.001", "--dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    report = json.loads(result.stdout)
    assert report["benchmark"] == "exact_latency"
    assert report["sources"] == ["inotify", "tracepoints", "residency"]
    assert report["pages_read"] == 50 and report["pages_reported"] > 0
    latency = report["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
