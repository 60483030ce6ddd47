"""Running a benchmark of ``bench/`` the way the smoke tests do: tiny sizes, JSON back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_bench(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Run ``bench/<script>`` with ``args`` in a fresh interpreter; its JSON report."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report
