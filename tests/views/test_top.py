"""``top``'s model and rendering: rates, order and totals from synthetic items; the file just
read at the top of "most cached" on the real kernel, its size checked against cachestat."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from pagecache import cached, read_pages, uuid_of, write_clean
from rich.console import Console

import aioduet
from aioduet import Event, Item, Uuid, _kernel
from aioduet._units import format_size
from aioduet.views import TopModel, TopSnapshot, render_top
from aioduet.views._top import Probe, probe_file

A, B, C = Uuid(1, 10, 1), Uuid(1, 11, 1), Uuid(1, 12, 1)
NAMES = {A: "/data/a", B: "/data/b", C: "/data/sub/c"}


def added(uuid: Uuid, index: int, count: int) -> Item:
    return Item(uuid, index, count, Event.ADDED)


def removed(uuid: Uuid, index: int, count: int) -> Item:
    return Item(uuid, index, count, Event.REMOVED)


async def get_path(uuid: Uuid) -> str:
    try:
        return NAMES[uuid]
    except KeyError:
        raise aioduet.NotFound(uuid) from None


def no_probe(targets: Sequence[tuple[Uuid, str]]) -> list[Probe | None]:
    return [None for _ in targets]


def text_of(snapshot: TopSnapshot, width: int = 120) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(render_top(snapshot))
    return out.getvalue()


def table_rows(text: str, title: str) -> list[str]:
    """The first cell of each body row of the table titled ``title``."""
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.strip() == title))
    body = lines[start + 4 :]  # title, top border, header, header rule
    names = []
    for line in body:
        if not line.startswith("│"):
            break
        names.append(line.split("│")[1].strip())
    return names


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_rates_are_pages_per_second_over_the_window() -> None:
    model = TopModel("/data", window=2.0)
    model.apply([added(A, 0, 100)])  # before the first tick: the baseline, no rate
    model.tick(0.0)
    model.apply([added(B, 0, 10)])
    model.tick(1.0)
    assert model.rate(A) == (0.0, 0.0)
    assert model.rate(B) == (10.0, 0.0)
    model.apply([added(B, 10, 30), removed(A, 0, 40)])
    model.tick(2.0)
    assert model.rate(B) == (20.0, 0.0)  # 40 pages over the last 2 s
    assert model.rate(A) == (0.0, 20.0)
    model.tick(3.0)  # the first second left the window
    assert model.rate(B) == (15.0, 0.0)
    model.tick(4.0)
    model.tick(5.0)
    assert model.rate(A) == model.rate(B) == (0.0, 0.0)
    assert [f.uuid for f in model.fastest()] == []
    assert [f.uuid for f in model.most_cached()] == [A, B]  # 60 and 40 pages


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_snapshot_orders_rows_and_sums_totals() -> None:
    model = TopModel("/data", rows=2)
    model.apply([Item(A, 0, 0, Event.OVERFLOW)])  # before the picture: empties nothing
    model.apply([added(A, 0, 5), added(B, 0, 50), added(C, 0, 20)])
    model.settle(0.0)  # the registration scan's picture
    model.apply([added(A, 5, 30), removed(B, 0, 10), Item(C, 0, 4, Event.DIRTY)])
    snapshot = await model.refresh(2.0, get_path, no_probe)
    assert [row.name for row in snapshot.most_cached] == ["b", "a"]  # 40, 35 (rows=2)
    assert [row.name for row in snapshot.fastest] == ["a", "b"]  # 15/s, 5/s
    a = snapshot.fastest[0]
    assert (a.cached, a.added, a.removed, a.writeback) == (35, 15.0, 0.0, None)
    totals = snapshot.totals
    assert (totals.files, totals.cached_files, totals.cached, totals.dirty) == (3, 3, 95, 4)
    assert (totals.added, totals.removed, totals.overflows) == (15.0, 5.0, 1)
    assert totals.items == 1.5  # 3 items in 2 s
    assert not snapshot.scanning and snapshot.window == 2.0

    text = text_of(snapshot)
    assert table_rows(text, "most cached") == ["b", "a"]
    assert table_rows(text, "changing fastest") == ["a", "b"]
    assert format_size(40 * _kernel.PAGE_SIZE) in text


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_unknown_paths_are_shown_by_inode_and_idle_files_forgotten() -> None:
    stranger = Uuid(2, 99, 0)
    model = TopModel("/data", window=1.0)
    model.tick(0.0)
    model.apply([added(stranger, 0, 3), added(A, 0, 8), removed(A, 0, 8)])
    snapshot = await model.refresh(1.0, get_path, no_probe)
    assert [row.name for row in snapshot.most_cached] == ["<dev 2 ino 99>"]
    assert [row.name for row in snapshot.fastest] == ["a", "<dev 2 ino 99>"]  # 16/s, 3/s
    snapshot = await model.refresh(2.0, get_path, no_probe)
    assert [row.name for row in snapshot.fastest] == []
    assert snapshot.totals.files == 1  # a: no pages, no activity in the window


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_reused_inode_starts_afresh() -> None:
    model = TopModel("/data")
    model.apply([added(A, 0, 50)])
    model.tick(0.0)
    model.apply([added(Uuid(A.dev, A.ino, A.gen + 1), 0, 2)])  # same inode, new generation
    model.tick(1.0)
    assert model.rate(A) == (2.0, 0.0)
    assert [f.cached for f in model.most_cached()] == [2]


def test_sizes_are_human_readable() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 1536 * 1024, 3 << 30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 MiB",
        "3.0 GiB",
    ]


@pytest.mark.kernel
def test_probe_answers_only_for_the_same_regular_file(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 16)
    read_pages(data, 0, 4)
    found = probe_file(uuid_of(data), str(data))
    assert found is not None
    assert found.size == 16 * _kernel.PAGE_SIZE and found.cached == cached(data)
    other = Uuid(uuid_of(data).dev, uuid_of(data).ino + 1, 0)
    assert probe_file(other, str(data)) is None
    assert probe_file(uuid_of(data), str(ext4_dir / "gone")) is None


@pytest.mark.kernel
@pytest.mark.anyio
async def test_the_file_just_read_tops_most_cached(ext4_dir: Path) -> None:
    big = write_clean(ext4_dir / "big", 256)
    small = write_clean(ext4_dir / "small", 16)
    medium = write_clean(ext4_dir / "sub" / "medium", 64)
    async with (
        aioduet.open_duet(interval=0.1) as duet,
        duet.register("top", Event.EXISTS | Event.MODIFIED, ext4_dir) as task,
    ):
        await task.wait_scanned()
        model = TopModel(task.path)
        model.tick(anyio.current_time())
        read_pages(big, 0, 8)
        read_pages(small)
        expected = read_pages(medium)  # just read, and the most cached of the three
        assert expected == 64
        medium_uuid = uuid_of(medium)
        with anyio.fail_after(20):
            while True:  # items of the three files: bounded by the deadline, rechecked
                model.apply(await task.fetch())
                shown = {f.uuid: f.cached for f in model.most_cached()}
                oracle = {uuid_of(p): cached(p) for p in (big, small, medium)}
                if shown == {u: n for u, n in oracle.items() if n}:
                    break
        snapshot = await model.refresh(anyio.current_time(), task.get_path)
        now_cached = cached(medium)  # the independent oracle, right before asserting

    text = text_of(snapshot)
    rows = table_rows(text, "most cached")
    assert rows[0] == "sub/medium"
    assert set(rows) <= {"big", "small", "sub/medium"}
    top = snapshot.most_cached[0]
    assert top.cached == now_cached == shown[medium_uuid]
    assert top.size == medium.stat().st_size and top.dirty == 0
    line = next(line for line in text.splitlines() if "sub/medium" in line)  # most cached's
    assert format_size(now_cached * _kernel.PAGE_SIZE) in line
    assert snapshot.fastest[0].name == "sub/medium"  # 64 pages just now: the fastest too
