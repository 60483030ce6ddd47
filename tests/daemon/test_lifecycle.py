"""Clients and daemons that die, stop, stall or collide: what the other side sees.

Real processes on the real kernel: the daemon is ``python -m aioduet daemon``; a client that
gets killed is a Python subprocess; everything is waited for with a bounded deadline.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from daemonproc import DaemonProcess, call, raw_connect, request, rss_bytes
from pagecache import read_pages, uuid_of, write_clean
from taskitems import collect, has, pages

import aioduet
import aioduet.abc
from aioduet import Event, Status
from aioduet.daemon._protocol import VERSION

pytestmark = pytest.mark.anyio

SpawnFn = Callable[..., DaemonProcess]
MiB = 1024 * 1024


async def wait_status(
    client: aioduet.abc.Duet, until: Callable[[Status], bool], seconds: float = 15
) -> Status:
    """Ask for the daemon's status until ``until(status)`` holds (a bounded poll)."""
    with anyio.fail_after(seconds):
        while True:
            status = await client.status()
            if until(status):
                return status
            await anyio.sleep(0.02)  # the interval of a bounded poll, not a synchronisation


# -- a client killed mid-stream ----------------------------------------------------------

DOOMED_CLIENT = """
import sys
import anyio
import aioduet

async def main(socket_path, root):
    async with aioduet.connect(socket_path) as client:
        tasks = [await client.register(f"doomed{n}", aioduet.Event.ADDED, root) for n in (0, 1)]
        for task in tasks:
            await task.wait_scanned()
        print("registered", *(task.id for task in tasks), flush=True)
        fetched = 0
        while True:  # only the first task is fetched: the second's items pend
            fetched += len(await tasks[0].fetch())
            print("fetched", fetched, flush=True)

anyio.run(main, *sys.argv[1:])
"""


async def test_killed_client_leaves_no_tasks_and_no_pending_pages(
    daemon: DaemonProcess, ext4_dir: Path
) -> None:
    files = [write_clean(ext4_dir / f"f{n}", 16) for n in range(8)]
    async with aioduet.connect(daemon.socket_path) as root:
        before = (await root.status()).store
        argv = [sys.executable, "-c", DOOMED_CLIENT, daemon.socket_path, str(ext4_dir)]
        async with await anyio.open_process(argv, stderr=None) as client:
            assert client.stdout is not None
            lines = BufferedByteReceiveStream(client.stdout)
            with anyio.fail_after(20):
                registered = (await lines.receive_until(b"\n", 1000)).split()
            assert registered[0] == b"registered"
            doomed = {int(task_id) for task_id in registered[1:]}
            for file in files:
                read_pages(file)
            with anyio.fail_after(15):
                assert (await lines.receive_until(b"\n", 1000)).startswith(b"fetched")
            # Mid-stream: the second task holds pending pages in the daemon's store.
            during = await wait_status(
                root,
                lambda status: any(
                    task.id in doomed and task.statistics.pending_pages > 0 for task in status.tasks
                ),
            )
            assert during.store.pending_pages > before.pending_pages
            client.kill()  # SIGKILL, by its pid
            assert await client.wait() == -signal.SIGKILL
        after = await wait_status(
            root,
            lambda status: (
                not status.tasks
                and status.store.pending_pages == before.pending_pages
                and status.store.pending_files == before.pending_files
            ),
        )
        assert after.store.pending_pages == before.pending_pages
        # Store.remove_slot drops the entries no remaining task has a use for.
        assert during.store.files > before.files
        assert after.store.files <= before.files
        assert daemon.proc.poll() is None


# -- a daemon that dies or stops under an iterating client -------------------------------


async def test_daemon_killed_under_an_iteration_raises_daemon_lost(
    daemon: DaemonProcess, ext4_dir: Path
) -> None:
    data = write_clean(ext4_dir / "data", 8)
    uuid = uuid_of(data)
    async with aioduet.connect(daemon.socket_path) as client:
        task = await client.register("lost", Event.ADDED, ext4_dir)
        await task.wait_scanned()
        read_pages(data)
        seen = 0
        with anyio.fail_after(15), pytest.raises(aioduet.DaemonLost, match="lost the aioduet"):
            async for item in task:
                seen += 1
                if item.uuid == uuid and seen == 1:
                    daemon.signal(signal.SIGKILL)
        assert seen >= 1
        assert not client.running
        assert not (await client.status()).running
        with pytest.raises(aioduet.DaemonLost):
            await client.register("after", Event.ADDED, ext4_dir)
    assert daemon.wait_exit() == -signal.SIGKILL


async def test_daemon_sigterm_ends_iterations_and_removes_its_socket(
    daemon: DaemonProcess, ext4_dir: Path
) -> None:
    data = write_clean(ext4_dir / "data", 8)
    uuid = uuid_of(data)
    async with aioduet.connect(daemon.socket_path) as client:
        task = await client.register("stopped", Event.ADDED, ext4_dir)
        await task.wait_scanned()
        read_pages(data)
        got = []
        with anyio.fail_after(15):
            async for item in task:  # ends (StopAsyncIteration), no exception
                got.append(item)
                if len(got) == 1:
                    daemon.signal(signal.SIGTERM)
        assert has(got, uuid, Event.ADDED)
        assert task.closed
        with pytest.raises(anyio.EndOfStream):
            task.fetch_nowait()
    assert daemon.wait_exit() == 0
    assert not await anyio.Path(daemon.socket_path).exists()
    gc.collect()  # a leaked socket warns (and fails) here, not in a later test
    assert "SIGTERM: stopping" in daemon.log
    assert "Traceback" not in daemon.log


async def test_root_shutdown_stops_the_daemon(daemon: DaemonProcess) -> None:
    async with aioduet.connect(daemon.socket_path) as client:
        await client.shutdown()
    assert daemon.wait_exit() == 0
    assert not await anyio.Path(daemon.socket_path).exists()


# -- two daemons on one socket -----------------------------------------------------------


async def test_second_daemon_refuses_a_live_socket_and_replaces_a_stale_one(
    spawn: SpawnFn, daemon: DaemonProcess
) -> None:
    second = spawn(socket=daemon.socket_path, wait=False)
    assert second.wait_exit() == 1
    assert f"an aioduet daemon already serves {daemon.socket_path}" in second.log
    async with aioduet.connect(daemon.socket_path) as client:
        assert (await client.status()).running  # the first one is untouched
    daemon.kill()  # SIGKILL: its socket file stays behind, stale
    assert await anyio.Path(daemon.socket_path).exists()
    third = spawn(socket=daemon.socket_path)
    async with aioduet.connect(third.socket_path) as client:
        assert (await client.status()).running
    assert third.proc.poll() is None


async def test_daemon_refuses_a_socket_path_that_is_no_socket(
    spawn: SpawnFn, ext4_dir: Path
) -> None:
    taken = ext4_dir / "plain-file"
    taken.write_text("not a socket")
    refused = spawn(socket=taken, wait=False)
    assert refused.wait_exit() == 1
    assert "exists and is no socket" in refused.log
    assert taken.read_text() == "not a socket"


# -- a stalled client --------------------------------------------------------------------


def flood(sock: socket.socket, requests: bytes, outcome: list[BaseException | None]) -> None:
    """Send requests, never reading a reply; record how the sending ended."""
    try:
        sock.sendall(requests)
    except OSError as exc:  # TimeoutError: the daemon stopped reading us
        outcome.append(exc)
    else:
        outcome.append(None)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_stalled_client_blocks_no_one_and_memory_stays_bounded(
    daemon: DaemonProcess, ext4_dir: Path
) -> None:
    stalled_dir, other_dir = ext4_dir / "stalled", ext4_dir / "other"
    files = [write_clean(stalled_dir / f"f{n:02}", 128) for n in range(48)]
    other = write_clean(other_dir / "data", 16)
    other_uuid = uuid_of(other)
    async with aioduet.connect(daemon.socket_path) as root:
        await root.status()
        rss_before = daemon.rss_bytes()

        # The stalled client: hello, register, one fetch; then it never reads again.
        stalled = raw_connect(daemon.socket_path, timeout=3)
        assert "ok" in call(stalled, {"op": "hello", "version": 1, "id": 1})
        fd = os.open(stalled_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            registered = call(
                stalled, {"op": "register", "name": "stall", "mask": 1, "id": 2}, [fd]
            )
        finally:
            os.close(fd)
        stalled_task = registered["ok"]["task"]
        stalled.sendall(
            request({"op": "fetch", "task": stalled_task, "max": 1, "wait": True, "id": 3})
        )
        for file in files:
            read_pages(file)
        pending_pages = (len(files) - 1) * 128  # the one fetch may take one file's run
        status = await wait_status(
            root,
            lambda status: any(
                task.id == stalled_task and task.statistics.pending_pages >= pending_pages - 1
                for task in status.tasks
            ),
        )
        # It asks for far more than it reads: 100 000 statuses would make ~100 MB of replies.
        requests = b"".join(request({"op": "status", "id": 4 + n}) for n in range(100_000))
        outcome: list[BaseException | None] = []
        sender = threading.Thread(target=flood, args=(stalled, requests, outcome), daemon=True)
        sender.start()
        try:
            # Meanwhile another client is served as usual: items, status, paths.
            async with root.register("other", Event.ADDED, other_dir) as task:
                await task.wait_scanned()
                read_pages(other)
                items = await collect(
                    task, lambda got: len(pages(got, other_uuid, Event.ADDED)) >= 16
                )
                assert pages(items, other_uuid, Event.ADDED) == set(range(16))
                assert await task.get_path(other_uuid) == str(other)
                with anyio.fail_after(5):
                    status = await root.status()
            await anyio.to_thread.run_sync(sender.join, 20)
            assert not sender.is_alive()
            assert isinstance(outcome[0], TimeoutError), outcome  # the daemon stopped reading
            # Pending pages are one store entry each; replies wait in a bounded outbox.
            stalled_status = next(t for t in status.tasks if t.id == stalled_task)
            assert stalled_status.statistics.pending_pages >= pending_pages - 1
            grown = daemon.rss_bytes() - rss_before
            bound = status.store.memory_bytes * 2 + 24 * MiB
            assert grown < bound, (grown, status.store)
        finally:
            stalled.close()
        after = await wait_status(root, lambda status: not status.tasks)
        assert after.store.pending_pages == 0
        assert rss_bytes(daemon.pid) - rss_before < status.store.memory_bytes * 2 + 24 * MiB


# -- out of descriptors --------------------------------------------------------------------


def test_a_daemon_out_of_descriptors_keeps_the_client_waiting_then_serves_it(
    daemon: DaemonProcess,
) -> None:
    _soft, hard = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (daemon.fd_count(), hard))
    with raw_connect(daemon.socket_path) as sock:  # queued: the daemon's accept() gets EMFILE
        daemon.wait_for_log("cannot accept a client now")
        assert daemon.proc.poll() is None
        resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (_soft, hard))
        assert "max_tasks" in call(sock, {"op": "hello", "version": VERSION, "id": 1})["ok"]
        assert "ok" in call(sock, {"op": "status", "id": 2})
