"""Smoke test of bench/tracepoint_rate.py: tiny sizes, JSON shape only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench" / "tracepoint_rate.py"


def test_tracepoint_rate_json_shape() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--pages", "256", "--rounds", "1", "--buffer-kb", "1024"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(done.stdout)
    assert result["benchmark"] == "tracepoint_rate"
    assert result["lost"] == 0
    assert result["events"] >= result["expected_events"] == 512
    for reader in ("source", "bare"):
        assert result[reader]["events_per_second"] > 0
        assert result[reader]["cpu_us_per_event"] > 0
    assert result["cost_ratio"] > 0
