"""The daemon items benchmark keeps running: a tiny run, checked for shape, never for speed.

The benchmark's daemon and embedded frameworks use the exact set (root) by default; this run
gives them ``--sources scan``, which any user may run. The piggy-back benchmark through the
daemon is checked in test_bench_piggyback.py."""

from __future__ import annotations

from benchrun import SuiteRun, bench_report

SIDES = ("embedded", "daemon", "embedded_tasks", "daemon_clients")


def test_daemon_items_benchmark_runs_and_reports_json(bench_suite: SuiteRun) -> None:
    report = bench_report(bench_suite.report, "daemon_items")
    assert report["benchmark"] == "daemon_items"
    assert report["parameters"]["clients"] == 2 and report["parameters"]["mask"] == "ADDED"
    assert report["tree"]["files"] == 3 and report["tree"]["pages"] == 6000
    assert report["tree"]["cached_pages_at_start"] > 2000  # every other page
    assert set(report["results"]) == {"fetch", "iter"}
    for result in report["results"].values():
        assert result["goal_ratio"] == 0.5
        assert result["ratio"] > 0 and result["clients_ratio_vs_embedded_tasks"] > 0
        for side in SIDES:
            (run,) = result[side]["runs"]
            tasks = 2 if side in ("embedded_tasks", "daemon_clients") else 1
            # Each task drained its whole backlog: one item per cached page.
            assert run["pages"] == run["backlog_pages"] > 2000 * tasks
            assert run["items_per_second"] > 0 and run["consumer_cpu_seconds"] > 0
            assert len(run["per_process"]) == (2 if side == "daemon_clients" else 1)
            if side.startswith("daemon"):
                assert run["daemon_cpu_seconds"] >= 0
                assert run["total_cpu_us_per_item"] >= run["consumer_cpu_us_per_item"]
            else:
                assert run["daemon_cpu_seconds"] is None
        per_client = result["daemon_clients"]["per_client_items_per_second"]
        assert 0 < per_client["min"] <= per_client["median"] <= per_client["max"]
