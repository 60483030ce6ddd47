"""``aioduet record`` and ``aioduet report`` from the command line, good input and bad."""

from __future__ import annotations

import gzip
import json
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pagecache import read_pages, write_clean

from aioduet import RecordError
from aioduet._cli import main
from aioduet.views import read_recording, working_set

pytestmark = pytest.mark.kernel


@pytest.fixture
def recorded(ext4_dir: Path) -> Path:
    tree = ext4_dir / "tree"
    read_pages(write_clean(tree / "a.bin", 64))
    write_clean(tree / "b.bin", 32)
    out = ext4_dir / "run.rec"
    code = main(
        [
            "record",
            str(tree),
            "-o",
            str(out),
            "--duration",
            "0.6",
            "--interval",
            "0.2",
            "--embedded",
        ]
    )
    assert code == 0
    return out


def test_record_writes_a_complete_recording(recorded: Path) -> None:
    recording = read_recording(recorded)
    assert len(recording.frames) == 3
    assert recording.duration >= 0.6
    assert [f.path for f in recording.paths()] == ["a.bin", "b.bin"]


def test_heatmap_as_text(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "heatmap", str(recorded), "--columns", "24"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 3
    assert all(len(row.split("|")[1]) == 24 for row in rows)
    assert "a.bin" in out
    assert "b.bin" in out


def test_heatmap_as_png(recorded: Path, tmp_path: Path) -> None:
    image = tmp_path / "map.png"
    assert main(["report", "heatmap", str(recorded), "-o", str(image)]) == 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wss_json_is_the_recordings_working_set(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "wss", str(recorded), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected = working_set(read_recording(recorded))
    assert [b for _, b in report["samples"]] == list(expected.cached)
    assert report["percentiles"]["100"] == max(expected.cached)
    assert main(["report", "wss", str(recorded)]) == 0
    assert "percentile" in capsys.readouterr().out


def test_files_json_has_a_line_per_file(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "files", str(recorded), "--json", "--sort", "peak"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["path"] == "a.bin"
    assert {"path", "pages", "cached", "peak", "mean", "added", "removed"} <= rows[0].keys()
    assert main(["report", "files", str(recorded)]) == 0
    assert "b.bin" in capsys.readouterr().out


@pytest.mark.parametrize("report", ["heatmap", "wss", "files"])
@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("truncate", "truncated"),
        ("foreign", "not an aioduet recording"),
        ("version", "version 9 is not supported"),
        ("missing", "cannot read"),
    ],
)
def test_a_bad_recording_is_one_line_and_exit_status_2(
    recorded: Path,
    capsys: pytest.CaptureFixture[str],
    report: str,
    damage: str,
    problem: str,
) -> None:
    bad = recorded.with_name("bad.rec")
    whole = recorded.read_bytes()
    if damage == "truncate":
        bad.write_bytes(whole[: len(whole) * 2 // 3])
    elif damage == "foreign":
        bad.write_text("path,size\n/a,1\n")
    elif damage == "version":
        bad.write_bytes(gzip.compress(b'{"format": "aioduet-record", "version": 9}\n'))
    assert main(["report", report, str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("aioduet: error: ")
    assert problem in err
    assert str(bad) in err


def test_record_of_a_missing_directory_is_a_usage_error(
    ext4_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["record", str(ext4_dir / "nowhere"), "-o", str(ext4_dir / "r")])
    assert caught.value.code == 2
    assert "no such directory: " in capsys.readouterr().err
    assert not (ext4_dir / "r").exists()


def _line_within(process: subprocess.Popen[str], seconds: float) -> str:
    """The next line of the process's stderr; fails if none comes in ``seconds``."""
    assert process.stderr is not None
    ready, _, _ = select.select([process.stderr], [], [], seconds)
    assert ready, f"no output within {seconds} s"
    return process.stderr.readline()


def _start_recording(tree: Path, out: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aioduet",
            "record",
            str(tree),
            "-o",
            str(out),
            "--interval",
            "0.2",
            "--embedded",
        ],
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert "recording" in _line_within(process, 30)
    assert "frame 0" in _line_within(process, 30)  # a frame is written: the recorder runs
    return process


def test_ctrl_c_ends_the_recording_with_a_last_frame(ext4_dir: Path) -> None:
    tree = ext4_dir / "tree"
    write_clean(tree / "a.bin", 16)
    out = ext4_dir / "run.rec"
    process = _start_recording(tree, out)
    try:
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=30)[1]
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, rest
    assert "recorded" in rest
    assert read_recording(out).frames


def test_a_killed_recorder_leaves_its_frames_readable_as_cut_short(ext4_dir: Path) -> None:
    tree = ext4_dir / "tree"
    write_clean(tree / "a.bin", 16)
    out = ext4_dir / "run.rec"
    process = _start_recording(tree, out)
    process.kill()
    process.communicate(timeout=30)
    with pytest.raises(RecordError, match=r"truncated: .* after [1-9]\d* frames"):
        read_recording(out)


def test_record_into_a_missing_directory_is_a_usage_error(
    ext4_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["record", str(ext4_dir), "-o", str(ext4_dir / "nowhere" / "r")])
    assert caught.value.code == 2
    assert "no such directory" in capsys.readouterr().err
