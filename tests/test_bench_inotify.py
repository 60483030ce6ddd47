"""The inotify rate benchmark keeps running: a tiny run, checked for shape, never for speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_inotify_rate_benchmark_runs_and_reports_json() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "inotify_rate.py")),
            *("--seconds", "0.2", "--rates", "20000,0", "--files", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    report = json.loads(result.stdout)
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
