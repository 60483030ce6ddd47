"""The daemon's Unix streams: cancellation racing readiness, closing, descriptors, errors.

The race tests reproduce, deterministically, what failed once in CI with anyio's own Unix
streams on asyncio: a task cancelled in the same loop iteration in which its socket became
ready. anyio's streams then set the result of a cancelled future from the loop's callback
(``InvalidStateError``, reported to the loop's exception handler); ours must not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from aioduet.daemon._unix import UnixListener, UnixStream, connect_unix, listen_unix

pytestmark = pytest.mark.anyio


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="aioduet-unix-", dir="/tmp"))
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@contextlib.contextmanager
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What the event loop's exception handler is told meanwhile (asyncio; trio has none)."""
    seen: list[dict[str, Any]] = []
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio
        yield seen
        return
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        yield seen
    finally:
        loop.set_exception_handler(previous)


@contextlib.asynccontextmanager
async def connected(directory: Path) -> AsyncIterator[tuple[UnixListener, UnixStream, UnixStream]]:
    """A listener and both ends of one connection to it."""
    async with (
        await listen_unix(str(directory / "s"), mode=0o600) as listener,
        await connect_unix(str(directory / "s")) as client,
        await listener.accept() as server,
    ):
        yield listener, client, server


async def test_a_receive_cancelled_as_its_data_arrives_loses_nothing(socket_dir: Path) -> None:
    async with connected(socket_dir) as (_listener, client, server):
        received: list[bytes] = []

        async def receive() -> None:
            received.append(await client.receive(16))

        with loop_errors() as errors:
            async with anyio.create_task_group() as group:
                group.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                server.raw_socket.send(b"x")  # readable from the next poll of the loop
                await anyio.lowlevel.checkpoint()  # ...in which this cancels the reader
                group.cancel_scope.cancel()
        assert errors == []
        # uvloop may run the reader's wake-up first: then the cancelled receive has the byte.
        if not received:
            received.append(await client.receive(16))
        assert received == [b"x"]


async def test_a_send_cancelled_as_room_appears_leaves_no_loop_error(socket_dir: Path) -> None:
    async with connected(socket_dir) as (_listener, client, server):
        client.raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with loop_errors() as errors:
            async with anyio.create_task_group() as group:
                group.start_soon(client.send, b"y" * (4 << 20))  # more than the buffers hold
                await anyio.wait_all_tasks_blocked()
                received = _drain(server.raw_socket)  # room from the next poll of the loop
                await anyio.lowlevel.checkpoint()
                group.cancel_scope.cancel()
        assert errors == []
        assert 0 < received < 4 << 20


async def test_an_accept_cancelled_as_a_client_connects_loses_no_client(socket_dir: Path) -> None:
    async with await listen_unix(str(socket_dir / "s"), mode=0o600) as listener:
        accepted: list[UnixStream] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        with loop_errors() as errors:
            async with anyio.create_task_group() as group:
                group.start_soon(accept)
                await anyio.wait_all_tasks_blocked()
                waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                waiting.connect(str(socket_dir / "s"))
                await anyio.lowlevel.checkpoint()
                group.cancel_scope.cancel()
        assert errors == []
        if not accepted:  # cancelled before it took the client: the client still waits
            accepted.append(await listener.accept())
        with waiting:
            async with accepted[0] as server:
                waiting.send(b"hi")
                assert await server.receive(16) == b"hi"


async def closed_while_waiting(
    wait: Callable[[], Awaitable[object]], close: Callable[[], Awaitable[None]]
) -> list[BaseException]:
    """Close while a task waits: what the waiting task raised (ClosedResourceError only)."""
    outcome: list[BaseException] = []

    async def waiting() -> None:
        try:
            await wait()
        except anyio.ClosedResourceError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(waiting)
        await anyio.wait_all_tasks_blocked()
        await close()
    return outcome


async def test_closing_wakes_a_task_waiting_to_read(socket_dir: Path) -> None:
    async with connected(socket_dir) as (_listener, client, _server):
        assert len(await closed_while_waiting(lambda: client.receive(16), client.aclose)) == 1
        with pytest.raises(anyio.ClosedResourceError):
            await client.send(b"z")


async def test_closing_the_listener_wakes_accept(socket_dir: Path) -> None:
    listener = await listen_unix(str(socket_dir / "s"), mode=0o600)
    assert len(await closed_while_waiting(listener.accept, listener.aclose)) == 1


async def test_the_peer_hanging_up_is_end_of_stream(socket_dir: Path) -> None:
    async with connected(socket_dir) as (_listener, client, server):
        await server.send(b"last")
        await server.aclose()
        assert await client.receive(16) == b"last"
        with pytest.raises(anyio.EndOfStream):
            await client.receive(16)
        with pytest.raises(anyio.EndOfStream):
            await client.receive_fds(16, 1)


async def test_descriptors_travel_with_their_bytes(socket_dir: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        async with connected(socket_dir) as (_listener, client, server):
            await client.send_fds(b"pipe" * 1000, [write_end])
            data, fds = await server.receive_fds(1 << 16, 2)
            while len(data) < 4000:
                data += await server.receive(1 << 16)
        assert data == b"pipe" * 1000
        (got,) = fds
        assert os.get_inheritable(got) is False
        os.write(got, b"!")
        os.close(got)
        assert os.read(read_end, 1) == b"!"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_too_many_descriptors_are_an_error_and_all_are_closed(socket_dir: Path) -> None:
    read_end, write_end = os.pipe()
    before = set(os.listdir("/proc/self/fd"))
    try:
        async with connected(socket_dir) as (_listener, client, server):
            await client.send_fds(b"many", [write_end] * 3)
            with pytest.raises(RuntimeError, match="more than 2 file descriptors"):
                await server.receive_fds(16, 2)
            await client.aclose()
            await server.aclose()
        assert set(os.listdir("/proc/self/fd")) <= before
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_listen_gives_the_socket_file_its_mode(socket_dir: Path) -> None:
    async with await listen_unix(str(socket_dir / "s"), mode=0o640):
        st = os.stat(socket_dir / "s")
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o640


async def test_connecting_where_nothing_listens_is_an_os_error(socket_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await connect_unix(str(socket_dir / "none"))
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_dir / "stale"))
    stale.close()
    with pytest.raises(ConnectionRefusedError):
        await connect_unix(str(socket_dir / "stale"))


async def test_bad_sizes_are_refused(socket_dir: Path) -> None:
    async with connected(socket_dir) as (_listener, client, _server):
        with pytest.raises(ValueError, match="max_bytes"):
            await client.receive(0)
        with pytest.raises(ValueError, match="max_fds"):
            await client.receive_fds(16, 0)
        with pytest.raises(ValueError, match="at least one byte"):
            await client.send_fds(b"", [0])


def _drain(sock: socket.socket) -> int:
    """Read what is there now, without waiting; how many bytes."""
    total = 0
    while True:
        try:
            total += len(sock.recv(1 << 20, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return total
