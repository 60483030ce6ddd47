"""From the runner's JSON report to figures people read: the comparison of aioduet with each
peer, and the Markdown tables of docs/performance.md.

The page holds its generated parts between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
lines; :func:`render_page` replaces each such part with what :data:`BLOCKS` makes of the
report (plots included, through ``_plots``) and leaves the prose between them alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MIB = 1 << 20
Report = dict[str, Any]


# --- formatting ------------------------------------------------------------------------------


def num(value: float | None, digits: int = 0) -> str:
    """``1,234,567`` or ``0.437``: a figure as the page writes it; ``-`` when missing."""
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def sig(value: float | None, figures: int = 3) -> str:
    """A ratio or time with ``figures`` significant digits (``0.437``, ``1.36``, ``24.0``)."""
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value:#.{figures}g}"
    magnitude = len(str(int(abs(value))))
    return f"{value:,.{max(figures - magnitude, 0)}f}"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:,.0f} MiB"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- the comparisons -------------------------------------------------------------------------


def result_of(report: Report, name: str) -> Report | None:
    """The report of the benchmark ``name`` in the runner's ``report``; None if it has none."""
    record = report.get("benchmarks", {}).get(name)
    result: Report | None = None if record is None else record.get("report")
    return result


def _row(
    measure: str,
    aioduet: float | None,
    peer: float | None,
    *,
    unit: str,
    versus: str,
    better: str,
    goal: str | None = None,
    ratio: float | None = None,
) -> Report:
    """One comparison: ``aioduet``'s figure and the ``peer``'s (named by ``versus``), in
    ``unit``; ``ratio`` is aioduet's over the peer's unless the benchmark says otherwise
    (its own ratio of medians, say); ``better`` says which way is good."""
    if ratio is None and aioduet is not None and peer:
        ratio = round(aioduet / peer, 4)
    return {
        "measure": measure,
        "unit": unit,
        "aioduet": aioduet,
        "peer_name": versus,
        "peer": peer,
        "ratio": ratio,
        "better": better,
        "goal": goal,
    }


def _store_rows(r: Report) -> Iterator[Report]:
    for key, label in (("single_pages", "single pages"), ("drain", "drain")):
        s = r["scenarios"][key]
        yield _row(
            f"{label}: seconds", s["seconds"], s["naive_seconds"],
            unit="s", versus="naive store", better="lower", ratio=s["ratio_vs_naive"],
        )  # fmt: skip


def _inotify_rows(r: Report) -> Iterator[Report]:
    source, bare = r["readers"]["source"], r["readers"]["bare"]
    yield _row(
        "events/s with no overflow",
        source["sustained_events_per_second"], bare["sustained_events_per_second"],
        unit="/s", versus="bare ctypes reader", better="higher",
    )  # fmt: skip
    yield _row(
        "CPU per event", source["cpu_us_per_event"], bare["cpu_us_per_event"],
        unit="µs", versus="bare ctypes reader", better="lower",
    )  # fmt: skip


def _tracepoint_rows(r: Report) -> Iterator[Report]:
    yield _row(
        "CPU per event", r["source"]["cpu_us_per_event"], r["bare"]["cpu_us_per_event"],
        unit="µs", versus="bare ring-buffer parse", better="lower",
    )  # fmt: skip


def _scan_rows(r: Report) -> Iterator[Report]:
    for state, result in r["results"].items():
        for peer in ("vmtouch", "fincore"):
            yield _row(
                f"{state} tree: seconds", result["aioduet_seconds"], result[f"{peer}_seconds"],
                unit="s", versus=peer, better="lower",
            )  # fmt: skip


def _idle_rows(r: Report) -> Iterator[Report]:
    idle, eviction = r["idle"], r["eviction"]
    yield _row(
        "idle CPU, % of a core", idle["cpu_percent_of_one_core"], idle["goal_percent"],
        unit="%", versus="goal", better="lower", goal=f"<= {idle['goal_percent']:g}%",
    )  # fmt: skip
    yield _row(
        "unnotified eviction to REMOVED (max)", eviction["max_seconds"],
        eviction["bound_seconds"], unit="s", versus="bound", better="lower",
        goal=f"<= {eviction['bound_seconds']:g} s",
    )  # fmt: skip


def _latency_rows(r: Report) -> Iterator[Report]:
    latency = r["latency_ms"]
    yield _row(
        "page cached to `async for`, p99", latency["p99"], latency["goal_p99"],
        unit="ms", versus="goal", better="lower", goal=f"<= {latency['goal_p99']:g} ms",
    )  # fmt: skip


def _cached_first_rows(r: Report) -> Iterator[Report]:
    largest = r["results"][-1]
    yield _row(
        f"a pick among {largest['files']:,} files", largest["pick_microseconds"],
        largest["rescan_pick_microseconds"], unit="µs", versus="cachestat rescan",
        better="lower",
    )  # fmt: skip


def _fio_rows(watcher: str) -> Callable[[Report], Iterator[Report]]:
    def rows(r: Report) -> Iterator[Report]:
        for workload, w in r["workloads"].items():
            yield _row(
                f"{workload} with {watcher}: MB/s",
                w["mb_per_second"]["with"], w["mb_per_second"]["without"],
                unit="MB/s", versus="without aioduet", better="higher",
                goal=f">= {w['goal_ratio']:g}", ratio=w["ratio"],
            )  # fmt: skip

    return rows


def _piggyback_rows(r: Report) -> Iterator[Report]:
    for scenario, s in r["scenarios"].items():
        goal = s.get("goal_read_ratio")
        read, wall = s["device_read_bytes"], s["wall_seconds"]
        yield _row(
            f"{scenario}: device bytes read", read["with"] / MIB, read["without"] / MIB,
            unit="MiB", versus="without aioduet", better="lower",
            goal=None if goal is None else f"<= {goal:g}", ratio=s["read_ratio"],
        )  # fmt: skip
        yield _row(
            f"{scenario}: wall time", wall["with"], wall["without"],
            unit="s", versus="without aioduet", better="lower", ratio=s["wall_ratio"],
        )  # fmt: skip
        if "daemon" in read:
            yield _row(
                f"{scenario} through one daemon: wall time", wall["daemon"], wall["with"],
                unit="s", versus="embedded frameworks", better="lower",
            )  # fmt: skip


def _daemon_rows(r: Report) -> Iterator[Report]:
    for consumer, c in r["results"].items():
        yield _row(
            f"`{consumer}` items/s, one client",
            c["daemon"]["items_per_second"], c["embedded"]["items_per_second"],
            unit="/s", versus="embedded framework", better="higher",
            goal=f">= {c['goal_ratio']:g}", ratio=c["ratio"],
        )  # fmt: skip


def _quartet_rows(r: Report) -> Iterator[Report]:
    overlaps = r["overlaps"]
    middle = sorted(overlaps, key=float)[len(overlaps) // 2]
    o, share = overlaps[middle], f"{float(middle):.0%} overlap"
    default, aware = o["default"], o["cache_aware"]
    yield _row(
        f"{share}: cache hit rate", aware["hit_rate"], default["hit_rate"],
        unit="", versus="Dask's placement", better="higher",
    )  # fmt: skip
    yield _row(
        f"{share}: job completion", aware["completion_seconds"], default["completion_seconds"],
        unit="s", versus="Dask's placement", better="lower", ratio=o["completion_ratio"],
    )  # fmt: skip


def _check_rows(r: Report) -> Iterator[Report]:
    for sources, s in r["sets"].items():
        yield _row(
            f"{sources} set: views off the kernel after sync", s["mismatches_after_sync"], None,
            unit="files", versus="kernel's page maps", better="lower", goal="0",
        )  # fmt: skip


ROWS: dict[str, Callable[[Report], Iterator[Report]]] = {
    "store_ingest": _store_rows,
    "inotify_rate": _inotify_rows,
    "tracepoint_rate": _tracepoint_rows,
    "scan_tree": _scan_rows,
    "idle_cpu": _idle_rows,
    "exact_latency": _latency_rows,
    "cached_first": _cached_first_rows,
    "fio_overhead": _fio_rows("the exact set"),
    "fio_record": _fio_rows("`aioduet record`"),
    "piggyback": _piggyback_rows,
    "daemon_items": _daemon_rows,
    "quartet": _quartet_rows,
    "flood": _check_rows,
    "soak": _check_rows,
}


def comparisons(report: Report) -> list[Report]:
    """Every comparison of aioduet with its peer (or goal) that the report's runs allow.

    A benchmark whose report lacks what a comparison needs gives a row with ``error`` set
    instead of failing the whole report.
    """
    rows: list[Report] = []
    for name, make in ROWS.items():
        result = result_of(report, name)
        if result is None:
            continue
        try:
            rows.extend({"benchmark": name, **row} for row in make(result))
        except (KeyError, IndexError, TypeError, ValueError) as error:
            rows.append({"benchmark": name, "error": f"{type(error).__name__}: {error}"})
    return rows


# --- the page's blocks -----------------------------------------------------------------------


def _missing(report: Report, name: str) -> str:
    record = report.get("benchmarks", {}).get(name)
    if record is None:
        why = f"not run in this {report.get('profile', '?')} run"
    else:
        why = record.get("skipped") or record.get("error") or "no report"
    return f"*Not measured: `{name}` {why}.*"


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "/s":
        return f"{num(value)}/s"
    if isinstance(value, int):
        return f"{num(value)} {unit}".rstrip()
    if unit in ("MiB", "MB/s"):
        return f"{num(value)} {unit}"
    return f"{sig(value)} {unit}".rstrip()


def block_summary(report: Report) -> str:
    rows = []
    for c in report.get("comparisons", []):
        if "error" in c:
            rows.append([c["benchmark"], f"*{c['error']}*", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                f"`{c['benchmark']}`",
                c["measure"],
                _value(c["aioduet"], c["unit"]),
                c["peer_name"]
                if c["peer"] is None
                else f"{_value(c['peer'], c['unit'])} ({c['peer_name']})",
                f"**{sig(c['ratio'])}**",
                f"{c['better']} is better",
                c["goal"] or "",
            ]
        )
    if not rows:
        return "*No comparison: no benchmark ran.*"
    header = ["benchmark", "measure", "aioduet", "peer, same run", "ratio", "reads", "goal"]
    return _table(header, rows)


def block_run(report: Report) -> str:
    m = report["machine"]
    fs = m.get("filesystem") or {}
    lines = [
        f"Profile `{report['profile']}`, {report['date']}, aioduet {report.get('aioduet')}"
        f" (commit `{report.get('commit')}`), {num(report.get('wall_seconds'))} s in all.",
        "",
        _table(
            ["kernel", "CPUs", "memory", "filesystem of the files", "Python", "load (1 min)"],
            [
                [
                    m["kernel"],
                    f"{m['cpus']} ({m.get('cpu_model') or '?'})",
                    f"{m['memory_bytes'] / (1 << 30):.1f} GiB",
                    f"{fs.get('type')} on {fs.get('device')}",
                    f"{m.get('implementation', '')} {m['python']}".strip(),
                    str(m["load_average_1min"]),
                ]
            ],
        ),
        "",
    ]
    rows = []
    for name, record in report["benchmarks"].items():
        outcome = record.get("skipped") or record.get("error") or f"{num(record['seconds'])} s"
        options = " ".join(record.get("options", []))
        rows.append([f"`{name}`", outcome, f"`{options}`" if options else "(defaults)"])
    lines.append(_table(["benchmark", "took", "options (besides its directory)"], rows))
    return "\n".join(lines)


def block_store_ingest(r: Report) -> str:
    rows = []
    for name, s in r["scenarios"].items():
        rate = s["per_second"]
        rows.append(
            [
                name.replace("_", " "),
                f"{sig(s['seconds'])} s",
                f"{num(rate)}/s",
                f"{sig(s['naive_seconds'])} s",
                f"{sig(s['floor_seconds'])} s",
                sig(s["ratio_vs_naive"]),
                sig(s["ratio_vs_floor"]),
            ]
        )
    header = ["scenario", "aioduet", "rate", "naive", "floor", "aioduet / naive", "/ floor"]
    memory = r["memory"]
    rows2 = [
        ["per pending page", sig(memory["bytes_per_pending_page"])],
        ["per file entry", sig(memory["bytes_per_file_entry"])],
        ["per pending page, all in", sig(memory["bytes_per_pending_page_all_in"])],
        [
            "per pending page, naive peer",
            f"{sig(memory['naive_bytes_per_pending_page'])}"
            f" ({sig(memory['naive_vs_aioduet'])} times as much)",
        ],
        [
            "growth after 10x more observations, nobody draining",
            num(memory["stalled_growth_bytes"]),
        ],
    ]
    p = r["parameters"]
    intro = f"{num(p['pages'])} observations over {num(p['files'])} files, {p['tasks']} tasks:"
    return f"{intro}\n\n{_table(header, rows)}\n\n{_table(['memory', 'bytes'], rows2)}"


def block_inotify_rate(r: Report) -> str:
    names = {"bare": "bare ctypes reader", "source": "**InotifySource**", "pyinotify": "pyinotify"}
    rows = []
    for key, reader in r["readers"].items():
        ratios = r.get("ratios", {}).get(key, {})
        overflow = reader.get("overflowed_at_target")
        rows.append(
            [
                names.get(key, key),
                f"{num(reader['sustained_events_per_second'])}/s",
                f"{num(reader['max_received_per_second'])}/s",
                "none" if overflow is None else f"at {num(overflow)}/s",
                f"{sig(reader['cpu_us_per_event'])} µs",
                "1" if key == "bare" else sig(ratios.get("sustained_vs_bare")),
                "1" if key == "bare" else sig(ratios.get("cpu_efficiency_vs_bare")),
            ]
        )
    header = [
        "reader", "sustained, no overflow", "most received", "first overflow",
        "CPU per event", "sustained vs bare", "CPU efficiency vs bare",
    ]  # fmt: skip
    return _table(header, rows)


def block_tracepoint_rate(r: Report) -> str:
    rows = [
        [
            label,
            f"{num(r[key]['events_per_second'])}/s",
            f"{sig(r[key]['cpu_us_per_event'])} µs",
        ]
        for key, label in (("source", "tracepoint source, into the store"), ("bare", "bare parse"))
    ]
    tail = (
        f"{num(r['events'])} events, {r['lost']} lost; CPU per event, source over bare parse:"
        f" **{sig(r['cost_ratio'])}**."
    )
    return f"{_table(['', 'events/s', 'CPU per event'], rows)}\n\n{tail}"


def block_scan_tree(r: Report) -> str:
    rows = []
    for state, s in r["results"].items():
        rows.append(
            [
                state,
                f"{sig(s['aioduet_seconds'])} s",
                f"{sig(s['vmtouch_seconds'])} s",
                f"{sig(s['fincore_seconds'])} s",
                f"**{sig(s['ratio_vs_vmtouch'])}**",
                f"**{sig(s['ratio_vs_fincore'])}**",
            ]
        )
    header = [
        "state",
        "`aioduet scan -R --json`",
        "`vmtouch`",
        "fincore",
        "vs vmtouch",
        "vs fincore",
    ]
    files = r["parameters"]["files"]
    mode = r["tools"]["fincore_mode"]
    return f"{num(files)} files; fincore as `{mode}`.\n\n{_table(header, rows)}"


def block_idle_cpu(r: Report) -> str:
    idle, eviction, walk = r["idle"], r["eviction"], r["walk"]
    rows = [
        [
            "idle CPU of the framework",
            f"**{sig(idle['cpu_percent_of_one_core'])}% of one core**"
            f" ({sig(idle['cpu_seconds'])} s in {sig(idle['seconds'])} s)",
            f"under {idle['goal_percent']:g}%",
        ],
        ["read to `ADDED`", f"{sig(eviction['read_to_added_seconds'])} s", ""],
        [
            "unnotified eviction to `REMOVED`",
            f"**{sig(eviction['max_seconds'])} s** (max of {eviction['hot_files']} files;"
            f" median {sig(eviction['median_seconds'])} s)",
            f"bound: {sig(eviction['bound_seconds'])} s",
        ],
        ["registration scan", f"{sig(r['registration_scan_seconds'])} s", ""],
        [
            "a walk of the whole tree",
            f"about {num(walk['expected_seconds'])} s expected",
            f"guaranteed within {num(walk['bound_seconds'])} s",
        ],
    ]
    p = r["parameters"]
    intro = f"{num(p['files'])} files in {num(p['dirs'])} directories, sources {r['sources']}:"
    return f"{intro}\n\n{_table(['measure', 'result', 'goal or bound'], rows)}"


def block_exact_latency(r: Report) -> str:
    latency = r["latency_ms"]
    row = [f"{sig(latency[k])} ms" for k in ("p50", "p90", "p99", "max")]
    row[2] = f"**{row[2]}**"
    row.append(f"p99 <= {latency['goal_p99']:g} ms")
    intro = f"{num(r['pages_reported'])} of {num(r['pages_read'])} pages read reported:"
    return f"{intro}\n\n{_table(['p50', 'p90', 'p99', 'max', 'goal'], [row])}"


def _watcher(parameters: Report) -> str:
    watcher = parameters.get("watcher", "task")
    if watcher == "task":
        return f"a task consuming every item (sources `{parameters['sources']}`)"
    return f"`aioduet {watcher}`" if watcher.startswith("record") else str(watcher)


def _fio_block(r: Report, plot: str | None) -> str:
    names = {"randread": "random reads, cached", "seqwrite": "sequential writes"}
    recording = "recording_bytes_per_frame" in next(iter(r["workloads"].values()))["framework"]
    rows = []
    for workload, w in r["workloads"].items():
        if workload == "randread":
            without, with_ = (f"{num(w['iops'][k] / 1000)}k IOPS" for k in ("without", "with"))
        else:
            without, with_ = (f"{num(w['mb_per_second'][k])} MB/s" for k in ("without", "with"))
        pairs = ", ".join(sig(x) for x in w["pair_ratios"])
        row = [
            names.get(workload, workload),
            without,
            with_,
            f"**{sig(w['ratio'])}** ({pairs})",
            f"{sig(w['framework']['cpu_percent_of_one_core'], 2)}% of a core",
        ]
        if recording:
            row.append(f"{num(w['framework']['recording_bytes_per_frame'])} bytes per frame")
        rows.append(row)
    header = ["workload", "without", "with", "ratio (pairs)", "watcher CPU"]
    if recording:
        header.append("recording")
    p = r["parameters"]
    intro = (
        f"Watching: {_watcher(p)}; {num(p['size'] / MIB)} MiB files,"
        f" {p['runtime']:g} s runs, {p['repeat']} pairs (ABBA):"
    )
    text = f"{intro}\n\n{_table(header, rows)}"
    if plot:
        text += f"\n\n![Foreground fio throughput with over without aioduet]({plot})"
    return text


def block_cached_first(r: Report) -> str:
    rows = [
        [
            num(x["files"]),
            f"{sig(x['first_pick_seconds'])} s",
            f"{sig(x['pick_microseconds'])} µs",
            f"{sig(x['rescan_pick_microseconds'] / 1000)} ms",
        ]
        for x in r["results"]
    ]
    header = ["files", "first pick (reads the order)", "per pick after", "rescan peer per pick"]
    growth = r["growth"]
    tail = (
        f"{sig(growth['files'])} times the files: a pick costs {sig(growth['cached_first'])}"
        f" times as much, the rescan {sig(growth['rescan'])} times."
    )
    return f"{_table(header, rows)}\n\n{tail}"


def _piggyback_block(r: Report, plot: str | None) -> str:
    names = {"three": "three tools together", "two": "backup + scrub"}
    dataset = r["dataset"]["bytes"]
    rows = []
    for name, s in r["scenarios"].items():
        read = s["device_read_bytes"]
        label = names.get(name, f"three, {r['parameters']['stagger']:g} s apart")
        rows.append(
            [
                label,
                f"{mib(read['without'])} ({read['without'] / dataset:.2f}x)",
                f"{mib(read['with'])} ({read['with'] / dataset:.2f}x)",
                f"**{sig(s['read_ratio'])}**",
                f"{sig(s['wall_seconds']['without'])} s",
                f"{sig(s['wall_seconds']['with'])} s",
                sig(s["wall_ratio"]),
                f"{sig(s['cpu_seconds']['without'])} s / {sig(s['cpu_seconds']['with'])} s",
            ]
        )
    header = [
        "scenario", "without: read (x dataset)", "with: read (x dataset)", "**read ratio**",
        "wall without", "wall with", "wall ratio", "CPU without / with",
    ]  # fmt: skip
    intro = f"A {mib(dataset)} dataset of {num(r['dataset']['files'])} files:"
    text = f"{intro}\n\n{_table(header, rows)}"
    daemon_rows = []
    for name, s in r["scenarios"].items():
        if "daemon" not in s["device_read_bytes"]:
            continue
        read, wall, cpu = s["device_read_bytes"], s["wall_seconds"], s["cpu_seconds"]
        tools = s.get("tools_cpu_seconds", cpu)
        for side, label, ratio in (
            ("without", "without aioduet", 1.0),
            ("with", "embedded (one framework per tool)", s["read_ratio"]),
            ("daemon", "daemon (one for the three)", s["daemon_read_ratio"]),
        ):
            daemon_cpu = cpu[side] - tools[side]
            daemon_rows.append(
                [
                    names.get(name, name),
                    label,
                    f"{mib(read[side])} ({read[side] / dataset:.2f}x)",
                    f"**{sig(ratio)}**",
                    f"{sig(wall[side])} s",
                    f"{sig(cpu[side])} s ({sig(tools[side])} + {sig(daemon_cpu)})",
                ]
            )
    if daemon_rows:
        header = ["scenario", "side", "device read", "read ratio", "wall", "CPU: tools + daemon"]
        text += f"\n\nThrough one daemon, in the same run:\n\n{_table(header, daemon_rows)}"
    if plot:
        text += f"\n\n![Device bytes read and wall time, with and without aioduet]({plot})"
    return text


def block_daemon_items(r: Report) -> str:
    rows = []
    clients = r["parameters"]["clients"]
    for consumer, c in r["results"].items():
        label = {"fetch": f"`fetch({r['parameters']['batch']})`", "iter": "`async for`"}
        rows.append(
            [
                label.get(consumer, consumer),
                f"{num(c['embedded']['items_per_second'])} items/s",
                f"{num(c['daemon']['items_per_second'])} items/s",
                f"**{sig(c['ratio'])}**",
                f"{num(c['embedded_tasks']['items_per_second'])} items/s"
                if "embedded_tasks" in c
                else "-",
                f"{num(c['daemon_clients']['items_per_second'])} items/s"
                if "daemon_clients" in c
                else "-",
                sig(c.get("clients_ratio_vs_embedded_tasks")),
            ]
        )
    header = [
        "consumer", "embedded, 1 task", "daemon, 1 client", "**ratio** (goal >= 0.5)",
        f"{clients} tasks, 1 embedded process", f"{clients} clients",
        f"{clients} clients / {clients} tasks",
    ]  # fmt: skip
    intro = (
        f"{num(r['tree']['pages'] // 2)} items per task, sources `{r['parameters']['sources']}`:"
    )
    return f"{intro}\n\n{_table(header, rows)}"


def block_quartet(r: Report) -> str:
    hits, times = [], []
    for key in sorted(r["overlaps"], key=float):
        o = r["overlaps"][key]
        default, aware = o["default"], o["cache_aware"]
        raise_ = o.get("hit_rate_raise")
        hits.append(
            [
                f"{float(key):.0%}",
                sig(o["reread_fraction"]),
                sig(default["hit_rate"]),
                sig(aware["hit_rate"]),
                "-" if raise_ is None else f"**{raise_:+.0%}**",
                mib(default["device_read_bytes"]),
                mib(aware["device_read_bytes"]),
                sig(o["device_bytes_ratio"]),
            ]
        )
        times.append(
            [
                f"{float(key):.0%}",
                f"{sig(default['completion_seconds'])} s",
                f"{sig(aware['completion_seconds'])} s",
                f"**{sig(o['completion_ratio'])}**",
                f"{sig(default['cpu_seconds'])} s",
                f"{sig(aware['cpu_seconds'])} s",
                sig(o["cpu_ratio"]),
            ]
        )
    p = r["parameters"]
    intro = (
        f"{p['workers']} workers, jobs of {p['files_per_job']} files of"
        f" {num(p['file_bytes'] / MIB)} MiB, {p['jobs']} jobs, {p['repeat']} runs,"
        f" `--via {p['via']} --sources {p['sources']}`:"
    )
    header1 = [
        "overlap", "ceiling", "hit rate: default", "cache-aware", "**raise**",
        "device read: default", "cache-aware", "ratio",
    ]  # fmt: skip
    header2 = [
        "overlap", "completion: default", "cache-aware", "**ratio**", "CPU: default",
        "cache-aware", "ratio",
    ]  # fmt: skip
    return f"{intro}\n\n{_table(header1, hits)}\n\n{_table(header2, times)}"


def block_flood(r: Report) -> str:
    rows = []
    for name, s in r["sets"].items():
        rows.append(
            [
                name,
                num(s["operations_total"]),
                num(s["observations_per_second"]),
                num(s["lost"]),
                num(max(s["overflows_per_task"], default=0)),
                f"{num(s['mismatches'])} ({sig(s['settle_seconds'])} s)",
                f"**{num(s['mismatches_after_sync'])}** ({sig(s['settle_seconds_after_sync'])} s)",
                num(s["mismatches_of_a_task_registered_after"]),
            ]
        )
    header = [
        "set", "operations", "observations/s", "events lost", "OVERFLOW per task",
        "files off (settle)", "after sync", "task registered after",
    ]  # fmt: skip
    return _table(header, rows)


def block_soak(r: Report) -> str:
    rows = []
    for name, s in r["sets"].items():
        series = s["series"]
        rows.append(
            [
                name,
                f"{num(s['flood']['operations_total'])} in {s['flood']['rounds']} rounds",
                f"{sig(series['rss_mib']['first'])} -> {sig(series['rss_mib']['last'])} MiB",
                f"{series['fds']['start_floor']} -> {series['fds']['end_floor']}",
                "yes"
                if s["all_flat"]
                else "no: " + ", ".join(k for k, v in series.items() if not v["flat"]),
                f"{num(s['mismatches'])} / **{num(s['mismatches_after_sync'])}**",
            ]
        )
    header = [
        "set", "operations", "RSS first -> last", "fd floor start -> end", "every series flat",
        "files off: before / after sync",
    ]  # fmt: skip
    return _table(header, rows)


def _of(name: str, make: Callable[[Report], str]) -> Callable[[Report, dict[str, str]], str]:
    def block(report: Report, plots: dict[str, str]) -> str:
        result = result_of(report, name)
        return _missing(report, name) if result is None else make(result)

    return block


def _with_plot(
    name: str, plot: str, make: Callable[[Report, str | None], str]
) -> Callable[[Report, dict[str, str]], str]:
    def block(report: Report, plots: dict[str, str]) -> str:
        result = result_of(report, name)
        return _missing(report, name) if result is None else make(result, plots.get(plot))

    return block


BLOCKS: dict[str, Callable[[Report, dict[str, str]], str]] = {
    "run": lambda report, plots: block_run(report),
    "summary": lambda report, plots: block_summary(report),
    "store_ingest": _of("store_ingest", block_store_ingest),
    "inotify_rate": _of("inotify_rate", block_inotify_rate),
    "tracepoint_rate": _of("tracepoint_rate", block_tracepoint_rate),
    "scan_tree": _of("scan_tree", block_scan_tree),
    "idle_cpu": _of("idle_cpu", block_idle_cpu),
    "exact_latency": _of("exact_latency", block_exact_latency),
    "cached_first": _of("cached_first", block_cached_first),
    "fio_overhead": _with_plot("fio_overhead", "overhead", _fio_block),
    "fio_record": _with_plot("fio_record", "", _fio_block),
    "piggyback": _with_plot("piggyback", "piggyback", _piggyback_block),
    "daemon_items": _of("daemon_items", block_daemon_items),
    "quartet": _of("quartet", block_quartet),
    "flood": _of("flood", block_flood),
    "soak": _of("soak", block_soak),
}

_BLOCK = re.compile(
    r"^<!-- bench:(?P<name>[a-z_]+) -->\n(?P<body>.*?)^<!-- /bench:(?P=name) -->$",
    re.DOTALL | re.MULTILINE,
)


def fill(page: str, report: Report, plots: dict[str, str]) -> str:
    """``page`` with every generated block made again from ``report``.

    Raises:
        ValueError: the page names a block nobody makes (a typo would otherwise stay stale).
    """

    def body(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"the page has a block {name!r}; known: {', '.join(BLOCKS)}")
        try:
            text = BLOCKS[name](report, plots)
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as error:
            text = f"*Not shown: the report of `{name}` lacks {type(error).__name__}: {error}.*"
        return f"<!-- bench:{name} -->\n{text}\n<!-- /bench:{name} -->"

    return _BLOCK.sub(body, page)


def blocks_of(page: str) -> dict[str, str]:
    """The generated blocks of ``page`` by name, bodies as they stand."""
    return {m["name"]: m["body"] for m in _BLOCK.finditer(page)}


def _plot_links(report: Report, docs: Path, plots_dir: Path) -> dict[str, str]:
    from _plots import PLOTS  # noqa: PLC0415 - matplotlib only when plots are made

    return {
        name: os.path.relpath(plots_dir / f"{name}.png", docs.parent)
        for name, plot in PLOTS.items()
        if plot.possible(report)
    }


def render_page(report: Report, docs: Path, plots_dir: Path) -> None:
    """Regenerate the plots into ``plots_dir`` and the blocks of ``docs`` from ``report``."""
    from _plots import draw  # noqa: PLC0415

    plots_dir.mkdir(parents=True, exist_ok=True)
    links = _plot_links(report, docs, plots_dir)
    for name in links:
        draw(name, report, plots_dir / f"{name}.png")
    docs.write_text(fill(docs.read_text(), report, links))


def check_page(report: Report, docs: Path, plots_dir: Path) -> list[str]:
    """The blocks of ``docs`` that differ from what ``report`` makes, and missing plots."""
    links = _plot_links(report, docs, plots_dir)
    page = docs.read_text()
    want, have = blocks_of(fill(page, report, links)), blocks_of(page)
    stale = [name for name in want if want[name] != have.get(name)]
    stale += [f"plot {name}" for name in links if not (plots_dir / f"{name}.png").is_file()]
    return stale
