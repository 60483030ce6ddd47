"""The residency source beside an exact source: passive, mirroring what tasks were told."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import Harness
from pagecache import evict, read_pages, uuid_of, write_clean

from aioduet import Event

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_rescan_reports_what_was_lost_since_the_exact_source_spoke(
    ext4_dir: Path,
) -> None:
    data = write_clean(ext4_dir / "data", 8)
    harness = Harness(ext4_dir, Event.EXISTS, periodic=False)
    source = harness.source
    uuid = uuid_of(data)
    key = (uuid.dev, uuid.ino, uuid.gen)
    harness.index.add(uuid.dev, uuid.ino, str(data))
    # The exact source reports pages 0-7 read, as it would: the task hears of them, and the
    # passive residency source mirrors them (it never looked at the file itself).
    read_pages(data)
    harness.source.sink.ingest([(key, 0, 8, int(Event.ADDED))])
    assert harness.drain() == [(0, 8, int(Event.ADDED))]
    # Then the file is evicted and the REMOVED events are lost: only a rescan that knows
    # what was reported can tell the task.
    evict(data)
    source.rescan(None)
    assert await source.scan_round() > 0
    assert harness.drain() == [(0, 8, int(Event.REMOVED))]


async def test_passive_mode_neither_scans_periodically_nor_follows_hints(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 4)
    harness = Harness(ext4_dir, Event.EXISTS, periodic=False)
    read_pages(data)
    harness.source.check_paths([str(data)])
    harness.source.check_dirty()
    assert not harness.source._hints  # the exact source reports these changes itself
    await harness.source.scan_all()  # explicit scans still work (registration, rescans)
    assert harness.drain() == [(0, 4, int(Event.ADDED))]
