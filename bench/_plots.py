"""The PNG plots of docs/performance.md, drawn from the runner's report with matplotlib.

``piggyback``: device bytes read and wall time of the maintenance tools without aioduet,
with an embedded framework each, and through one daemon. ``overhead``: foreground fio
throughput with aioduet over without, for the exact set and for ``aioduet record``, and the
watcher's CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from _report import result_of

Report = dict[str, Any]
SIDES = (("without", "without aioduet"), ("with", "embedded"), ("daemon", "one daemon"))
COLOURS = {"without": "#9e9e9e", "with": "#1f77b4", "daemon": "#ff7f0e", "record": "#2ca02c"}


@attrs.frozen
class Plot:
    """A plot: which benchmarks it needs (any one of them), and how it is drawn."""

    needs: tuple[str, ...]
    draw: Callable[[Report, Any], None]

    def possible(self, report: Report) -> bool:
        """Whether ``report`` holds a run it can be drawn from."""
        return any(result_of(report, name) is not None for name in self.needs)


def _bars(axes: Any, groups: list[str], series: dict[str, list[float | None]]) -> None:
    width = 0.8 / max(len(series), 1)
    for number, (side, values) in enumerate(series.items()):
        xs = [i + (number - (len(series) - 1) / 2) * width for i in range(len(groups))]
        heights = [0.0 if v is None else v for v in values]
        label = dict(SIDES).get(side, side)
        bars = axes.bar(xs, heights, width, label=label, color=COLOURS.get(side))
        axes.bar_label(bars, labels=[f"{h:.2g}" if h else "" for h in heights], fontsize=7)
    axes.set_xticks(range(len(groups)), groups)


def _piggyback(report: Report, figure: Any) -> None:
    r = result_of(report, "piggyback")
    assert r is not None
    scenarios = list(r["scenarios"])
    dataset = r["dataset"]["bytes"]
    sides = [s for s, _ in SIDES if all(s in r["scenarios"][n]["wall_seconds"] for n in scenarios)]
    read, wall = figure.subplots(1, 2)
    _bars(
        read,
        scenarios,
        {
            s: [r["scenarios"][n]["device_read_bytes"][s] / dataset for n in scenarios]
            for s in sides
        },
    )
    read.set_ylabel("device bytes read (x dataset)")
    read.axhline(1.0, color="black", linewidth=0.6, linestyle=":")
    figure.legend(*read.get_legend_handles_labels(), loc="outside lower center", ncols=3)
    _bars(
        wall,
        scenarios,
        {s: [r["scenarios"][n]["wall_seconds"][s] for n in scenarios] for s in sides},
    )
    wall.set_ylabel("wall time (s)")
    size = f"{dataset / (1 << 30):.3g} GiB" if dataset >= 1 << 30 else f"{dataset >> 20} MiB"
    figure.suptitle(f"Maintenance tools over a {size} dataset (piggyback.py)")


def _overhead(report: Report, figure: Any) -> None:
    runs = {
        label: result
        for name, label in (("fio_overhead", "with"), ("fio_record", "record"))
        if (result := result_of(report, name)) is not None
    }
    workloads = sorted({w for result in runs.values() for w in result["workloads"]})
    ratio, cpu = figure.subplots(1, 2)
    names = {"with": "exact set (embedded)", "record": "aioduet record"}

    def figures(key: Callable[[Report], float]) -> dict[str, list[float | None]]:
        return {
            label: [
                key(result["workloads"][w]) if w in result["workloads"] else None for w in workloads
            ]
            for label, result in runs.items()
        }

    _bars(ratio, workloads, figures(lambda w: float(w["ratio"])))
    ratio.axhline(1.0, color="black", linewidth=0.6, linestyle=":")
    ratio.set_ylabel("fio throughput, with / without")
    for container, label in zip(ratio.containers, runs, strict=True):
        container.set_label(names[label])
    figure.legend(*ratio.get_legend_handles_labels(), loc="outside lower center", ncols=2)
    _bars(cpu, workloads, figures(lambda w: float(w["framework"]["cpu_percent_of_one_core"])))
    cpu.set_ylabel("watcher CPU (% of one core)")
    figure.suptitle("Foreground overhead (fio_overhead.py)")


PLOTS: dict[str, Plot] = {
    "piggyback": Plot(("piggyback",), _piggyback),
    "overhead": Plot(("fio_overhead", "fio_record"), _overhead),
}


def draw(name: str, report: Report, path: Path) -> None:
    """Draw the plot ``name`` from ``report`` into the PNG file ``path``.

    Raises:
        RuntimeError: matplotlib is missing (``pip install -e '.[plot]'``).
    """
    try:
        import matplotlib  # noqa: PLC0415 - only the runner needs it

        matplotlib.use("Agg")
        from matplotlib.figure import Figure  # noqa: PLC0415
    except ImportError as error:
        raise RuntimeError("the plots need matplotlib: pip install -e '.[plot]'") from error
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    PLOTS[name].draw(report, figure)
    figure.savefig(path, dpi=100, metadata={"Software": None})
