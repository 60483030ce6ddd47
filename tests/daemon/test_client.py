"""What only the daemon's client does: items that come in batches, cancelled registrations,
connecting where no daemon runs, and tools written against aioduet.abc."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from frameworks import Frameworks
from pagecache import read_pages, uuid_of, write_clean
from taskitems import pages

import aioduet
import aioduet.abc
from aioduet import Event
from aioduet.tasks import cached_first

pytestmark = pytest.mark.anyio


async def test_fetch_nowait_returns_what_arrived_and_asks_for_more(ext4_dir: Path) -> None:
    data = write_clean(ext4_dir / "data", 8)
    uuid = uuid_of(data)
    frameworks = Frameworks("daemon")
    async with frameworks.open("scan", interval=0.05) as duet:
        task = await duet.register("nowait", Event.ADDED, ext4_dir)
        await task.wait_scanned()
        read_pages(data)
        got: list[aioduet.Item] = []
        with anyio.fail_after(15):
            while len(pages(got, uuid, Event.ADDED)) < 8:
                got += task.fetch_nowait()  # [] until the background answer arrives
                await anyio.sleep(0.01)
        assert pages(got, uuid, Event.ADDED) == set(range(8))
        assert task.statistics().items_delivered == len(got)


async def test_a_cancelled_registration_leaves_no_task_behind(ext4_dir: Path) -> None:
    frameworks = Frameworks("daemon")
    async with frameworks.open("scan", interval=0.05) as duet:
        with anyio.CancelScope() as scope:
            scope.cancel()  # cancelled before the daemon's answer can arrive
            await duet.register("cancelled", Event.EXISTS, ext4_dir)
        assert scope.cancelled_caught
        # The daemon registered it (ids are never reused: the next one is 2), then closed it
        # when its answer found nobody waiting.
        async with duet.register("next", Event.EXISTS, ext4_dir) as task:
            assert task.id == 2
        with anyio.fail_after(10):
            while True:
                if not (await duet.status()).tasks:
                    break
                await anyio.sleep(0.01)
        assert frameworks.embedded.store.active_slots == 0


async def test_connecting_where_no_daemon_runs_says_so(ext4_dir: Path) -> None:
    with pytest.raises(aioduet.DaemonUnavailable, match="aioduet daemon"):
        async with aioduet.connect(ext4_dir / "none.sock"):
            pass


async def test_register_checks_its_arguments_at_once(ext4_dir: Path) -> None:
    frameworks = Frameworks("daemon")
    async with frameworks.open("scan") as duet:
        with pytest.raises(ValueError, match="absolute"):
            duet.register("r", Event.EXISTS, "relative")
        with pytest.raises(ValueError, match="EXISTS already covers"):
            duet.register("r", Event.EXISTS | Event.ADDED, ext4_dir)
        with pytest.raises(NotADirectoryError):
            duet.register("r", Event.EXISTS, write_clean(ext4_dir / "f", 1))
        with pytest.raises(TypeError):
            duet.register(3, Event.EXISTS, ext4_dir)  # type: ignore[arg-type]
        assert (await duet.status()).tasks == ()


@pytest.mark.parametrize("kind", ["embedded", "daemon"])
async def test_cached_first_runs_on_either_framework(kind: str, ext4_dir: Path) -> None:
    cold = write_clean(ext4_dir / "a-cold", 4)
    hot = write_clean(ext4_dir / "b-hot", 4)
    async with Frameworks(kind).open("scan", interval=0.05) as duet:
        assert isinstance(duet, aioduet.abc.Duet)
        async with duet.register("first", Event.EXISTS, ext4_dir) as task:
            await task.wait_scanned()
            read_pages(hot)
            picks = cached_first(task)
            seen = [pick.path async for pick in picks]
    assert sorted(seen) == sorted([str(cold), str(hot)])  # every file once
