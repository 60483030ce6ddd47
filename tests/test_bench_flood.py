"""The flood benchmark: after a storm of file operations, the views agree with the kernel.

A short flood of the unprivileged set must end with every task's view equal to the kernel's
page maps, page for page (the goal is 0 mismatches, so the test holds it). The exact set
runs in the benchmark too; see docs/reliability.md for what it still gets wrong.
"""

from __future__ import annotations

from pathlib import Path

from benchrun import run_bench


def test_the_unprivileged_set_converges_after_a_flood(tmp_path: Path) -> None:
    report = run_bench(
        *("flood.py", "--sets", "scan", "--files", "40", "--seconds", "3"),
        *("--settle", "20", "--dir", str(tmp_path)),
    )
    scan = report["sets"]["scan"]
    assert scan["operations_total"] > 500  # a flood, not a trickle
    assert set(scan["operations"]) >= {"read", "write", "truncate", "rename", "delete", "evict"}
    assert scan["mismatches"] == 0, scan["mismatch_examples"]
    assert scan["mismatches_after_sync"] == 0, scan["mismatch_examples_after_sync"]
    assert scan["mismatches_of_a_task_registered_after"] == 0
    assert not scan["unsignalled_loss"]
