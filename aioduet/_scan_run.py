"""Running the ``scan`` command: output in batches, and a scan split over two processes.

On two CPUs a large scan is split by directory between this process and a forked one (the
per-file work, ~10 us of syscalls and Python, runs in one thread otherwise): both write
whole lines to the same file descriptor, in pieces no larger than ``PIPE_BUF``, and the
forked one reports its counts through a pipe at the end.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import select
import signal
import struct
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from . import _scan

__all__ = ["run_scan"]


def _encoded(lines: list[str], encoding: str) -> bytes:
    chunk = "\n".join(lines) + "\n"
    try:
        return chunk.encode(encoding)
    except UnicodeEncodeError:  # a file name that is not UTF-8 (table output only)
        text = chunk.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return text.encode(encoding, "replace")


def _stream_writer(out: TextIO) -> Callable[[list[str]], None]:
    """Write lines to ``out`` (which buffers them)."""

    def write(lines: list[str]) -> None:
        chunk = "\n".join(lines) + "\n"
        try:
            out.write(chunk)
        except UnicodeEncodeError:  # a file name that is not UTF-8 (table output only)
            out.write(chunk.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))

    return write


def _shared_writer(fd: int, encoding: str) -> Callable[[list[str]], None]:
    """Write lines to ``fd``, which the other process of a split scan writes to as well.

    In pieces of at most ``PIPE_BUF`` bytes cut after a newline: a pipe writes each piece
    whole, so the lines of the two processes never mix (a line longer than that, with a path
    of thousands of bytes, goes alone and may be split if the pipe is full).
    """

    def write(lines: list[str]) -> None:
        data = _encoded(lines, encoding)
        view = memoryview(data)
        start, end = 0, len(data)
        while start < end:
            stop = data.rfind(b"\n", start, start + select.PIPE_BUF) + 1
            if stop <= start:
                stop = data.find(b"\n", start) + 1 or end
            while start < stop:
                start += os.write(fd, view[start:stop])

    return write


def _print_scan(
    scan: _scan.Scan,
    paths: Sequence[str],
    lines: list[str],
    *,
    line: Callable[[_scan.Row], str],
    totals: _scan.Totals | None,
    write: Callable[[list[str]], None],
    progress: Callable[[int], None] | None,
) -> None:
    # Formats whole batches (map, no Python loop per file); leaves the last lines in `lines`.
    for batch in scan.batches(paths):
        lines += map(line, batch)
        if totals is not None:
            for found in batch:
                totals.add(found)
        if len(lines) >= 2048:
            write(lines)
            lines.clear()
            if progress is not None:
                progress(scan.files)


def _can_split(paths: Sequence[str], out: TextIO, recursive: bool) -> bool:
    """Whether to scan in two processes: two CPUs, directories to share, an fd to share."""
    if not hasattr(os, "fork") or len(os.sched_getaffinity(0)) < 2:
        return False
    if threading.active_count() > 1:  # forking a threaded process is not safe
        return False
    try:
        out.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation among them: a StringIO
        return False
    directories = sum(os.path.isdir(path) for path in paths)
    return directories > 1 or (recursive and directories == 1)


_COUNTERS = ("files", "unknown", "unreadable_dirs", "skipped")
_FILES = struct.Struct("=q")  # the count of files that the two processes of a split share


def _state(scan: _scan.Scan, totals: _scan.Totals | None) -> dict[str, Any]:
    """What the second process of a split scan tells the first at the end."""
    state: dict[str, Any] = {name: getattr(scan, name) for name in _COUNTERS}
    state.update(mincore_fallback=scan.mincore_fallback, first_problem=scan.first_problem)
    state.update(reasons=scan.reasons)
    if totals is not None:
        state["totals"] = [totals.files, totals.unknown, totals.sums, totals.known]
    return state


def _merge(scan: _scan.Scan, totals: _scan.Totals | None, state: dict[str, Any]) -> None:
    for name in _COUNTERS:
        setattr(scan, name, getattr(scan, name) + state[name])
    scan.mincore_fallback = scan.mincore_fallback or state["mincore_fallback"]
    for reason, count in state["reasons"].items():
        scan.reasons[reason] = scan.reasons.get(reason, 0) + count
    if scan.first_problem is None:
        scan.first_problem = state["first_problem"]
    if totals is not None:
        files, unknown, sums, known = state["totals"]
        totals.files += files
        totals.unknown += unknown
        for name in sums:
            totals.sums[name] += sums[name]
            totals.known[name] += known[name]


def _second_part(
    paths: Sequence[str],
    *,
    recursive: bool,
    as_json: bool,
    total: bool,
    out: TextIO,
    report: int,
    shared: mmap.mmap,
) -> NoReturn:
    """The forked process of a split scan: part 1 of 2, its state to ``report``; never returns.

    Its count of files so far goes to the first 8 bytes of ``shared``, for the progress line.
    """
    code = 1
    try:
        scan = _scan.Scan(recursive=recursive, parts=2, part=1)
        totals = _scan.Totals() if total else None
        line = _scan.json_line if as_json else _scan.table_row
        lines: list[str] = []
        write = _shared_writer(out.fileno(), out.encoding)

        def progress(files: int) -> None:
            _FILES.pack_into(shared, 0, files)

        try:
            _print_scan(
                scan, paths, lines, line=line, totals=totals, write=write, progress=progress
            )
            if lines:
                write(lines)
            state = _state(scan, totals)
        except BrokenPipeError:  # `aioduet scan ... | head`: the first process stops quietly
            state = {"broken_pipe": True}
        os.write(report, json.dumps(state).encode())
        code = 0
    except KeyboardInterrupt:
        pass
    except BaseException:  # said on stderr; the first process reports the failure
        traceback.print_exc()
        sys.stderr.flush()
    finally:
        os._exit(code)  # no atexit, no flush of the buffers inherited from the first process


def _split(
    scan: _scan.Scan,
    paths: Sequence[str],
    lines: list[str],
    *,
    line: Callable[[_scan.Row], str],
    totals: _scan.Totals | None,
    out: TextIO,
    progress: _scan.Progress | None,
    recursive: bool,
    as_json: bool,
) -> None:
    """Scan half the directories here, half in a forked process; both write to ``out``'s fd.

    The lines of the two come in no particular order (each directory's files stay in
    directory order); the counts are merged in ``scan`` and ``totals``. On two CPUs this
    nearly halves the time of a large scan (bench/scan_tree.py), which is ~10 us of Python and
    syscalls per file, all in one thread; a tree that is one huge directory gains nothing.
    """
    out.flush()
    sys.stderr.flush()
    write = _shared_writer(out.fileno(), out.encoding)
    if lines:  # the table's header, before anything of the other process
        write(lines)
        lines.clear()
    shared = mmap.mmap(-1, _FILES.size)  # MAP_SHARED: the other process's count of files
    read, report = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        _second_part(
            paths,
            recursive=recursive,
            as_json=as_json,
            total=totals is not None,
            out=out,
            report=report,
            shared=shared,
        )
    os.close(report)
    reader = os.fdopen(read, "rb")
    finished = False
    try:
        update = None
        if progress is not None:
            redraw = progress.update

            def update(files: int) -> None:
                redraw(files + _FILES.unpack_from(shared)[0])

        _print_scan(scan, paths, lines, line=line, totals=totals, write=write, progress=update)
        if lines:
            write(lines)
            lines.clear()
        data = reader.read()
        finished = True
    finally:
        reader.close()
        if not finished:  # a broken pipe, Ctrl-C...: the other process stops too
            os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        raise OSError(errno.ECHILD, "the second process of the scan failed")
    state = json.loads(data)
    if state.get("broken_pipe"):
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
    _merge(scan, totals, state)


def run_scan(
    paths: Sequence[str],
    *,
    recursive: bool,
    as_json: bool,
    total: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    """Print the residency of ``paths`` to ``out``: the ``scan`` command, synchronous.

    With two CPUs or more, a directory among ``paths`` and ``out`` a real file (or pipe),
    half the directories are scanned in a forked process, and the lines of files in
    different directories come in no fixed order.

    Returns:
        0 if every file was seen, 1 if some were unknown or skipped, or some directory could
        not be listed (one summary line on ``err`` says what).
    """
    split = _can_split(paths, out, recursive)
    scan = _scan.Scan(recursive=recursive, parts=2 if split else 1)
    totals = _scan.Totals() if total else None
    progress = _scan.Progress(err.write) if err.isatty() else None
    line = _scan.json_line if as_json else _scan.table_row
    lines = [] if as_json else [_scan.table_header()]
    try:
        if split:
            _split(
                scan,
                paths,
                lines,
                line=line,
                totals=totals,
                out=out,
                progress=progress,
                recursive=recursive,
                as_json=as_json,
            )
            write = _shared_writer(out.fileno(), out.encoding)
        else:
            write = _stream_writer(out)
            update = None if progress is None else progress.update
            _print_scan(scan, paths, lines, line=line, totals=totals, write=write, progress=update)
        if totals is not None:
            lines.append(_scan.total_json(totals) if as_json else _scan.total_row(totals))
        if lines:
            write(lines)
        out.flush()
    except BrokenPipeError:  # `aioduet scan ... | head`: stop quietly
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())  # so that the flush at exit does not fail again
            os.close(devnull)
        return 1
    finally:
        if progress is not None:
            progress.clear()
    if scan.mincore_fallback:
        print("aioduet: scan: no cachestat here: cached pages counted with mincore", file=err)
    summary = scan.summary()
    if summary is None:
        return 0
    print(f"aioduet: scan: {summary}", file=err)
    return 1
