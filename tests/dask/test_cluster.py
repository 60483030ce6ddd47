"""aioduet.dask on a real Dask cluster: two worker processes, a replica directory each.

The workers run the exact sources (root, tracefs) over ``replica-0`` and ``replica-1``; the
files are real files on ext4, and every claim about what is cached is checked against
cachestat, read on the workers themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from distributed import Client, Event, LocalCluster, get_worker
from pagecache import evict, read_pages, write_clean

import aioduet.dask
from aioduet import _kernel
from aioduet.dask import NotInstalled
from aioduet.dask._plugins import DEFAULT_MAX_BYTES
from aioduet.dask._summary import ENVELOPE

pytestmark = pytest.mark.kernel

PAGES = 32  # per file


@pytest.fixture(scope="module")
def data() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="aioduet-dask-", dir="/tmp"))
    for name in ("0", "1"):
        (root / f"replica-{name}").mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def client(data: Path) -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        aioduet.dask.install(client, data / "replica-{name}", interval=0.1)
        yield client


@contextlib.contextmanager
def in_process_cluster() -> Iterator[Client]:
    """A client of a cluster of one worker in this process, for the tests that need their own."""
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def addresses(client: Client) -> dict[str, str]:
    """Worker name -> address."""
    names: dict[str, Any] = client.run(lambda dask_worker: str(dask_worker.name))
    return {name: address for address, name in names.items()}


def replicas(data: Path, name: str) -> dict[str, Path]:
    """A fresh file of PAGES pages, clean and evicted, in each replica."""
    return {r: write_clean(data / f"replica-{r}" / name, PAGES) for r in ("0", "1")}


def on_the_workers(client: Client, names: list[str]) -> dict[str, dict[str, int]]:
    """Cached bytes of the files per worker, by cachestat on the worker itself."""

    def cachestat(dask_worker: Any, names: list[str]) -> dict[str, int]:
        root = dask_worker.plugins["aioduet-residency"].root
        found = {}
        for name in names:
            fd = os.open(root / name, os.O_RDONLY)
            try:
                found[name] = _kernel.cachestat(fd).cache * 4096
            finally:
                os.close(fd)
        return found

    answers: dict[str, dict[str, int]] = client.run(cachestat, names=names)
    return answers


def converge(condition: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"the board did not catch up in time: {LAST}"
        time.sleep(0.1)


LAST: dict[str, Any] = {}
"""The last board a condition looked at, for the failure message."""


def board_of(client: Client, names: list[str]) -> dict[str, dict[str, int]]:
    LAST["board"] = board = {
        worker: {name: summary.files.get(name, 0) for name in names}
        for worker, summary in aioduet.dask.board(client).items()
    }
    return board


def where_run(path: Path) -> tuple[str, str]:
    """What a task returns: the worker it ran on, and the local path it was given."""
    return str(get_worker().name), str(path)


@pytest.mark.parametrize("holder", ["0", "1"])
def test_a_task_goes_to_the_worker_caching_its_input(
    client: Client, data: Path, holder: str
) -> None:
    files = replicas(data, f"only-in-{holder}")
    name = files[holder].name
    where = addresses(client)

    def only_holder_caches() -> bool:
        read_pages(files[holder])  # right before looking: the reclaim daemon evicts idle pages
        for other, path in files.items():
            if other != holder:
                evict(path)
        cached = board_of(client, [name])
        return cached.get(where[holder], {}).get(name) == PAGES * 4096 and all(
            bytes_[name] == 0 for worker, bytes_ in cached.items() if worker != where[holder]
        )

    converge(only_holder_caches)
    assert aioduet.dask.plan(client, [name]) == [where[holder]]
    futures = aioduet.dask.cache_aware_map(client, where_run, [name])
    assert client.gather(futures) == [(holder, str(files[holder]))]
    restrictions = client.run_on_scheduler(
        lambda dask_scheduler, key: sorted(dask_scheduler.tasks[key].worker_restrictions),
        key=futures[0].key,
    )
    assert restrictions == [where[holder]]


def test_nothing_cached_anywhere_leaves_placement_to_dask(client: Client, data: Path) -> None:
    files = replicas(data, "cached-nowhere")
    name = files["0"].name

    def nowhere() -> bool:
        for path in files.values():
            evict(path)
        return all(bytes_[name] == 0 for bytes_ in board_of(client, [name]).values())

    converge(nowhere)
    assert aioduet.dask.plan(client, [name]) == [None]
    futures = aioduet.dask.cache_aware_map(client, where_run, [name])
    ran_on, path = client.gather(futures)[0]
    assert path == str(data / f"replica-{ran_on}" / name)
    restrictions = client.run_on_scheduler(
        lambda dask_scheduler, key: (
            sorted(dask_scheduler.tasks[key].worker_restrictions or ()),
            dask_scheduler.tasks[key].loose_restrictions,
        ),
        key=futures[0].key,
    )
    assert restrictions == ([], False)


def test_the_board_matches_cachestat_on_the_workers(client: Client, data: Path) -> None:
    names = [f"board-{n}" for n in range(4)]
    files = {name: replicas(data, name) for name in names}
    # Different amounts per file and replica: pages [0, n) of file n in replica 0, and the
    # last 2n pages in replica 1.
    wanted = {("0", name): (0, n) for n, name in enumerate(names)} | {
        ("1", name): (PAGES - 2 * n, 2 * n) for n, name in enumerate(names)
    }
    where = addresses(client)
    found: dict[str, Any] = {}

    def matches() -> bool:
        for (replica, name), (first, count) in wanted.items():
            path = files[name][replica]
            evict(path)
            if count:
                read_pages(path, first, count)
        truth = on_the_workers(client, names)
        found["truth"], found["board"] = truth, board_of(client, names)
        return found["board"] == truth

    converge(matches)
    assert found["truth"][where["0"]] == {name: n * 4096 for n, name in enumerate(names)}
    assert found["truth"][where["1"]] == {name: 2 * n * 4096 for n, name in enumerate(names)}
    summaries = client.run_on_scheduler(
        lambda dask_scheduler: dask_scheduler.plugins["aioduet-residency-board"].board()
    )
    for wire in summaries.values():
        assert len(msgpack.packb(wire)) <= DEFAULT_MAX_BYTES + ENVELOPE


def test_a_task_reading_several_files_goes_where_most_of_them_are(
    client: Client, data: Path
) -> None:
    first, second = replicas(data, "pair-a"), replicas(data, "pair-b")
    where = addresses(client)

    def split() -> bool:  # replica 0 caches 8 pages of each, replica 1 all of pair-b
        for files in (first, second):
            evict(files["0"])
            evict(files["1"])
            read_pages(files["0"], 0, 8)
        read_pages(second["1"])
        board = board_of(client, ["pair-a", "pair-b"])
        return board.get(where["0"]) == {"pair-a": 8 * 4096, "pair-b": 8 * 4096} and board.get(
            where["1"]
        ) == {"pair-a": 0, "pair-b": PAGES * 4096}

    converge(split)
    futures = aioduet.dask.cache_aware_map(client, where_run, [("pair-a", "pair-b")])
    ran_on, paths = client.gather(futures)[0]
    assert ran_on == "1"
    replica = data / "replica-1"
    assert paths == str((replica / "pair-a", replica / "pair-b"))


def test_a_dead_worker_does_not_break_placement(client: Client, data: Path) -> None:
    files = replicas(data, "survivor")
    name = files["0"].name
    where = addresses(client)
    pids: dict[str, int] = client.run(os.getpid)

    def in_zero() -> bool:
        read_pages(files["0"])
        evict(files["1"])
        cached = board_of(client, [name])
        return cached.get(where["0"], {}).get(name) == PAGES * 4096

    converge(in_zero)
    # Worker 0 is busy, so the task placed there waits in its queue when the worker dies.
    # Dask would leave a task restricted to a dead worker waiting for good; the placement's
    # allow_other_workers lets it run elsewhere.
    gate = Event("gate")
    busy = client.submit(gate.wait, 60, workers=[where["0"]], pure=False)
    futures = aioduet.dask.cache_aware_map(client, where_run, [name], pure=False)
    os.kill(pids[where["0"]], signal.SIGKILL)
    [(ran_on, path)] = client.gather(futures)
    assert path == str(data / f"replica-{ran_on}" / name)
    busy.cancel()
    # The dead worker leaves the board; whoever replaced it reports on its own.
    converge(lambda: where["0"] not in aioduet.dask.board(client))
    client.wait_for_workers(2, timeout=60)
    converge(lambda: len(aioduet.dask.board(client)) == 2)
    again = aioduet.dask.cache_aware_map(client, where_run, [name], pure=False)
    assert client.gather(again)[0][1].endswith(name)


def test_bad_inputs_are_clear_errors(client: Client) -> None:
    with pytest.raises(ValueError, match="relative"):
        aioduet.dask.cache_aware_map(client, where_run, ["/etc/passwd"])
    with pytest.raises(ValueError, match="relative"):
        aioduet.dask.cache_aware_map(client, where_run, ["a/../../b"])
    with pytest.raises(TypeError, match="single str"):
        aioduet.dask.cache_aware_map(client, where_run, "abc")
    with pytest.raises(TypeError, match="workers"):
        aioduet.dask.cache_aware_map(client, where_run, ["a"], workers=["x"])
    with pytest.raises(ValueError, match="at least one file"):
        aioduet.dask.cache_aware_map(client, where_run, [()])


def test_without_the_plugins_the_error_says_what_to_do() -> None:
    with in_process_cluster() as bare:
        with pytest.raises(NotInstalled, match="install"):
            aioduet.dask.cache_aware_map(bare, where_run, ["x"])
        with pytest.raises(NotInstalled, match="install"):
            aioduet.dask.board(bare)


def test_a_worker_that_cannot_watch_its_root_fails_install(data: Path) -> None:
    with (
        in_process_cluster() as other,
        pytest.raises(NotADirectoryError, match="data root"),
    ):
        aioduet.dask.install(other, data / "no-such-replica-{name}")


def test_an_asynchronous_client_maps_with_placement(client: Client, data: Path) -> None:
    files = replicas(data, "async-input")
    name = files["0"].name
    where = addresses(client)

    def only_in_zero() -> bool:
        read_pages(files["0"])
        evict(files["1"])
        return board_of(client, [name]).get(where["0"], {}).get(name) == PAGES * 4096

    converge(only_in_zero)

    async def run() -> Any:
        async with Client(client.scheduler.address, asynchronous=True) as other:
            with pytest.raises(TypeError, match="cache_aware_map_async"):
                aioduet.dask.cache_aware_map(other, where_run, [name])
            futures = await aioduet.dask.cache_aware_map_async(other, where_run, [name])
            return await other.gather(futures)

    assert asyncio.run(run()) == [("0", str(files["0"]))]


def test_a_reporter_removed_takes_its_worker_off_the_board(data: Path) -> None:
    files = replicas(data, "unplugged")
    with in_process_cluster() as own:
        aioduet.dask.install(own, data / "replica-0", interval=0.1)

        def cached() -> bool:
            read_pages(files["0"])
            return any(s.files.get("unplugged") for s in aioduet.dask.board(own).values())

        converge(cached)
        own.unregister_worker_plugin("aioduet-residency")
        assert aioduet.dask.board(own) == {}
        assert aioduet.dask.plan(own, ["unplugged"]) == [None]
