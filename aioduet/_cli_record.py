"""``aioduet record`` and ``aioduet report``: residency over time, and its heatmaps.

Imported when the parser is built: only light imports at the top (see ``_cli``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._kernel import PAGE_SIZE
from ._units import format_size

if TYPE_CHECKING:
    from .views import FrameSummary, Recording

from ._cli_common import (
    at_least_one,
    existing_directory,
    in_loop,
    positive,
    until_signal,
    writable_file,
)

__all__ = ["configure_record", "configure_report"]

_PROGRESS_EVERY = 5.0  # seconds between two progress lines of `record`


def configure_record(parser: argparse.ArgumentParser) -> None:
    """Add record's own arguments (the framework and connect options are already there)."""
    parser.description = (
        "Record the page-cache residency of a tree over time: every --interval seconds, the"
        " cached pages of each region of each file that changed, its dirty pages and the"
        " pages its items moved, into a gzip-compressed JSON-lines file (format in"
        " docs/commands/record.md). Stops after --duration seconds, or on Ctrl-C/SIGTERM;"
        " either way the file is completed. --interval also paces the framework's periodic"
        " residency scan (embedded)."
    )
    parser.add_argument("path", type=existing_directory, help="directory to record")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        type=writable_file,
        metavar="FILE",
        help="recording to write",
    )
    parser.add_argument(
        "--duration",
        type=positive,
        default=None,
        help="seconds to record (default: until Ctrl-C)",
    )
    parser.add_argument(
        "--regions",
        type=at_least_one,
        default=32,
        help="regions per file, its resolution in a heatmap (default 32)",
    )
    for action in parser._actions:  # the framework's option, with what it means here
        if "--interval" in action.option_strings:
            action.help = (
                "seconds between two frames (default 1); embedded, also between two rounds"
                " of the periodic residency scan"
            )
    parser.set_defaults(run=in_loop(_record))


async def _record(args: argparse.Namespace) -> int:
    import anyio  # noqa: PLC0415 - not at start-up (module docstring)

    from ._cli_daemon import framework_for  # noqa: PLC0415 - same reason
    from .views import record  # noqa: PLC0415 - same reason

    last = [-_PROGRESS_EVERY]  # the first frame is reported at once

    def progress(frame: FrameSummary) -> None:
        if frame.t - last[0] >= _PROGRESS_EVERY:
            last[0] = frame.t
            print(
                f"  {frame.t:7.1f} s  frame {frame.index}:"
                f" {format_size(frame.cached * PAGE_SIZE)} cached, {frame.items} items",
                file=sys.stderr,
            )

    async with framework_for(args) as duet:
        print(
            f"recording {args.path} into {args.output} every {args.interval:g} s"
            + (f" for {args.duration:g} s" if args.duration else " (Ctrl-C to stop)"),
            file=sys.stderr,
        )
        stop = anyio.Event()
        async with anyio.create_task_group() as group:

            def stop_now() -> None:
                print("stopping: taking a last frame", file=sys.stderr)
                stop.set()

            group.start_soon(until_signal, stop_now)
            summary = await record(
                duet,
                args.path,
                args.output,
                duration=args.duration,
                interval=args.interval,
                regions_per_file=args.regions,
                on_frame=progress,
                stop=stop,
            )
            group.cancel_scope.cancel()
    size = os.stat(args.output).st_size
    print(
        f"recorded {summary.frames} frames of {summary.files} files over"
        f" {summary.duration:.1f} s ({summary.items} items) into {args.output}"
        f" ({format_size(size)})",
        file=sys.stderr,
    )
    return 0


def configure_report(parser: argparse.ArgumentParser) -> None:
    """Add report's subcommands: heatmap, wss, files."""
    parser.description = (
        "Read a recording made by `aioduet record`. Exit status 2 if the file is missing,"
        " truncated, foreign or malformed (a one-line error says which)."
    )
    reports = parser.add_subparsers(dest="report", required=True, metavar="REPORT")

    heatmap = reports.add_parser(
        "heatmap",
        help="time x file space x cached fraction, as text or an image",
        description=(
            "Time x file space x cached fraction: the files lie end to end in path order."
            " Without -o the map is printed as text (time down, file space across); with -o"
            " it is drawn into an image (time across, file space up, as DAMON's heatmaps)."
        ),
    )
    heatmap.add_argument("file", metavar="FILE", help="the recording")
    heatmap.add_argument("-o", "--output", default=None, help="image to write (.png, .svg, ...)")
    heatmap.add_argument(
        "--rows",
        type=at_least_one,
        default=None,
        help="time rows (default: one per frame, at most 40 as text, 400 as an image)",
    )
    heatmap.add_argument(
        "--columns",
        type=at_least_one,
        default=None,
        help="file-space columns (default: the terminal's width as text, 400 as an image)",
    )
    heatmap.set_defaults(run=_report(_heatmap))

    wss = reports.add_parser(
        "wss",
        help="cached bytes of the tree over time, and their distribution",
        description=(
            "The working-set size: the recorded tree's cached bytes at each frame, and their"
            " percentiles over the frames (as damo report wss)."
        ),
    )
    wss.add_argument("file", metavar="FILE", help="the recording")
    wss.add_argument("--json", action="store_true", help="one JSON object: samples, percentiles")
    wss.add_argument(
        "--samples",
        type=at_least_one,
        default=20,
        help="time samples to print as text (default 20)",
    )
    wss.set_defaults(run=_report(_wss))

    files = reports.add_parser(
        "files",
        help="each file: size, cached at the end, at most and on average, pages moved",
        description=(
            "A row per recorded file: its size; its cached pages at the last frame, at most"
            " and on average over the frames; its dirty pages at the end; and the pages its"
            " items added and removed over the recording."
        ),
    )
    files.add_argument("file", metavar="FILE", help="the recording")
    files.add_argument("--json", action="store_true", help="one JSON object per file, per line")
    files.add_argument(
        "--sort",
        choices=("path", "cached", "peak", "mean", "added", "removed"),
        default="path",
        help="order of the rows (default path; the others largest first)",
    )
    files.set_defaults(run=_report(_files))


def _report(
    function: Callable[[argparse.Namespace, Recording], int],
) -> Callable[[argparse.Namespace], int]:
    """Read the recording first: a bad file is a usage error (exit status 2), in one line."""

    def run(args: argparse.Namespace) -> int:
        from .errors import RecordError  # noqa: PLC0415 - not at start-up (module docstring)
        from .views import read_recording  # noqa: PLC0415 - same reason

        try:
            recording = read_recording(args.file)
        except RecordError as exc:
            print(f"aioduet: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"aioduet: error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
            return 2
        return function(args, recording)

    return run


def _heatmap(args: argparse.Namespace, recording: Recording) -> int:
    from .views import heatmap, heatmap_text, save_heatmap  # noqa: PLC0415 - not at start-up

    if not recording.frames:
        print(f"aioduet: error: {args.file}: the recording has no frames", file=sys.stderr)
        return 2
    if args.output is None:
        width = shutil.get_terminal_size((80, 24)).columns
        columns = args.columns or max(10, width - 14)
        rows = args.rows or 40
    else:
        columns = args.columns or 400
        rows = args.rows or 400
    try:
        result = heatmap(recording, rows=rows, columns=columns)
    except ValueError as exc:
        print(f"aioduet: error: {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        print(heatmap_text(result))
    else:
        save_heatmap(result, args.output, title=f"page-cache residency of {recording.header.root}")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _wss(args: argparse.Namespace, recording: Recording) -> int:
    from .views import working_set  # noqa: PLC0415 - not at start-up (module docstring)
    from .views._reports import PERCENTILES  # noqa: PLC0415 - same reason

    wss = working_set(recording)
    if args.json:
        print(json.dumps(wss.as_json()))
        return 0
    if not wss.cached:
        print("the recording has no frames")
        return 0
    print("percentile  cached")
    for p in PERCENTILES:
        print(f"{p:>10}  {format_size(wss.percentile(p))}")
    print("\n  time (s)  cached")
    step = max(1, -(-len(wss.times) // args.samples))
    shown = list(range(0, len(wss.times), step))
    if shown[-1] != len(wss.times) - 1:
        shown.append(len(wss.times) - 1)
    for i in shown:
        print(f"{wss.times[i]:10.2f}  {format_size(wss.cached[i])}")
    return 0


def _files(args: argparse.Namespace, recording: Recording) -> int:
    from rich.console import Console  # noqa: PLC0415 - not at start-up (module docstring)
    from rich.table import Table  # noqa: PLC0415 - same reason

    from .views import file_reports  # noqa: PLC0415 - same reason

    reports = file_reports(recording)
    if args.sort != "path":
        key = args.sort
        reports.sort(
            key=lambda r: (
                getattr(r.activity, key) if key in ("added", "removed") else getattr(r, key)
            ),
            reverse=True,
        )
    page = recording.header.page_size
    if args.json:
        for report in reports:
            print(json.dumps(report.as_json(page)))
        return 0
    table = Table(title=f"{recording.header.root}: {len(recording.frames)} frames")
    table.add_column("path", overflow="fold")  # whole paths, folded if they must be
    for name in ("size", "cached", "peak", "mean", "dirty", "added", "removed"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in reports:
        table.add_row(
            r.path,
            format_size(r.pages * page),
            format_size(r.cached * page),
            format_size(r.peak * page),
            format_size(r.mean * page),
            format_size(r.dirty * page),
            str(r.activity.added),
            str(r.activity.removed),
        )
    console = Console()
    if not console.is_terminal:  # a pipe or a file: whole paths, however wide the table
        longest = max((len(r.path) for r in reports), default=4)
        console = Console(width=max(console.width, longest + 90))
    console.print(table)
    return 0
