"""The idle CPU benchmark keeps running: a tiny run, checked for shape, never for speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_idle_cpu_benchmark_runs_and_reports_json(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, str(ROOT / "bench" / "idle_cpu.py")),
            *("--files", "200", "--dirs", "4", "--seconds", "0.5", "--hot", "3"),
            *("--interval", "0.2", "--dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    report = json.loads(result.stdout)
    assert report["benchmark"] == "idle_cpu"
    assert report["sources"] == ["inotify", "residency", "writeback"]
    assert report["idle"]["cpu_seconds"] >= 0
    eviction = report["eviction"]
    assert eviction["hot_files"] == 3
    assert eviction["max_seconds"] > 0 and eviction["bound_seconds"] > 0
    assert report["walk"]["bound_seconds"] > 0
