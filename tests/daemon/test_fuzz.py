"""Thousands of malformed frames from several clients at once, while a good client works.

Each malformed connection must get an error frame (length, kind 1, a JSON object with
``error``) and then the end of the stream, unless it hung up first; the daemon must serve a
well-behaved client throughout, and give back every descriptor and nearly all memory after.
The frames come from hypothesis (derandomized, no example database: the same run each time)
and go out over raw sockets from worker threads.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest
from daemonproc import HELLO, DaemonProcess, frame, json_body, read_frames, request, send_fds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pagecache import evict, read_pages, uuid_of, write_clean
from taskitems import collect, pages

import aioduet
import aioduet.abc
from aioduet import Event
from aioduet.daemon._protocol import MAX_REQUEST

pytestmark = [
    pytest.mark.anyio,
    # One daemon process and a few thousand connections: one client loop is enough.
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]

MiB = 1024 * 1024
THREADS = 8
EXAMPLES = 40
"""Hypothesis examples; each is a batch of 20 to 60 connections."""
ERROR, END, EITHER = "error", "end", "either"
"""What a connection must see: an error frame then the end; the end (it hung up first);
one of the two (random bytes may stop mid-frame)."""


# -- what a malformed connection sends -----------------------------------------------------


class Case:
    """One connection: bytes to send (optionally with descriptors), and what must come back."""

    def __init__(self, data: bytes, expect: str, *, fds: str = "", hang_up: bool = False) -> None:
        self.data = data
        self.expect = expect
        self.fds = fds
        self.hang_up = hang_up or expect != ERROR

    def __repr__(self) -> str:
        return f"Case({self.data[:80]!r}, {self.expect}, fds={self.fds!r})"


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
not_u32 = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=8),
    st.integers(max_value=0),
    st.integers(min_value=2**32),
    st.floats(),
    st.lists(st.integers(), max_size=3),
)
greeted = st.booleans().map(lambda hello: HELLO if hello else b"")
ops = ["register", "fetch", "bmap", "get_path", "close", "status", "shutdown"]


def valid_request(op: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "register": {"name": "n", "mask": 1},
        "fetch": {"task": 1, "max": 1, "wait": False},
        "bmap": {"task": 1, "flags": 4, "uuid": [1, 2, 3]},
        "get_path": {"task": 1, "uuid": [1, 2, 3]},
        "close": {"task": 1},
    }.get(op, {})
    return {"op": op, "id": 7, **fields}


def cut(data: bytes, point: int) -> bytes:
    return data[: max(1, min(point, len(data) - 1))]


@st.composite
def cases(draw: st.DrawFn) -> Case:  # noqa: PLR0911, PLR0912 - one branch per kind of mistake
    kind = draw(st.integers(0, 15))
    hello = draw(greeted)
    if kind == 0:  # a frame cut short, then the client hangs up
        whole = hello + request(valid_request(draw(st.sampled_from(ops))))
        return Case(cut(whole, draw(st.integers(1, len(whole)))), END)
    if kind == 1:  # a length above the limit
        length = draw(st.integers(MAX_REQUEST + 1, 2**32 - 1))
        return Case(hello + struct.pack(">I", length) + draw(st.binary(max_size=64)), ERROR)
    if kind == 2:  # a length of zero
        return Case(hello + b"\0\0\0\0" + draw(st.binary(max_size=16)), ERROR)
    if kind == 3:  # a kind other than JSON (2 is the daemon's own ITEMS kind)
        body = json.dumps(valid_request("status")).encode()
        return Case(hello + frame(body, draw(st.integers(0, 255).filter(lambda k: k != 1))), ERROR)
    if kind == 4:  # no JSON at all
        body = draw(st.binary(min_size=1, max_size=200).filter(is_no_json))
        return Case(hello + frame(body), ERROR)
    if kind == 5:  # JSON that is no object
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return Case(hello + request(value), ERROR)
    if kind == 6:  # hello with another version
        version = draw(st.one_of(st.integers().filter(lambda v: v != 1), json_scalars))
        return Case(request({"op": "hello", "version": version, "id": 1}), ERROR)
    if kind == 7:  # a request before hello
        return Case(request(valid_request(draw(st.sampled_from(ops)))), ERROR)
    if kind == 8:  # an unknown operation
        op = draw(st.one_of(st.text(max_size=12), json_values).filter(lambda o: o not in ops))
        return Case(HELLO + request({"op": op, "id": 2}), ERROR)
    if kind == 9:  # a field of the wrong type
        message = valid_request(draw(st.sampled_from(["fetch", "bmap", "get_path", "close"])))
        message[draw(st.sampled_from(["task", "id"]))] = draw(not_u32)
        return Case(HELLO + request(message), ERROR)
    if kind == 10:  # fields the operation does not have
        message = valid_request(draw(st.sampled_from(ops)))
        extra = draw(st.dictionaries(st.text(max_size=6), json_values, min_size=1))
        extra.pop("op", None)
        message.update(extra)
        if set(message) == set(valid_request(message["op"])):
            message["surplus"] = 1
        return Case(HELLO + request(message), ERROR)
    if kind == 11:  # nesting deeper than any parser's recursion
        depth = draw(st.integers(1_000, 30_000))
        body = b"[" * depth + b"]" * depth
        if draw(st.booleans()):
            body = b'{"op":"status","id":2,"x":' + body + b"}"
        return Case(HELLO + frame(body), ERROR)
    if kind == 12:  # random bytes, then the client hangs up
        return Case(hello + draw(st.binary(min_size=1, max_size=300)), EITHER)
    if kind == 13:  # descriptors that prove nothing, then a broken frame
        fds = draw(st.sampled_from(["pipe", "o_path", "file"]))
        register = request({"op": "register", "name": "x", "mask": 1, "id": 2})
        return Case(HELLO + register, ERROR, fds=fds)
    if kind == 14:  # more descriptors than the daemon takes ahead of their requests
        return Case(HELLO, ERROR, fds="many")
    # Descriptors sent ahead with a request that takes none; the client hangs up.
    return Case(HELLO + request(valid_request("status")), END, fds="ahead")


def is_no_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return True
    return False


# -- running a case --------------------------------------------------------------------------


def run_case(path: str, scratch: Path, case: Case) -> None:
    deadline = time.monotonic() + 15
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(path)
        try:
            send_case(sock, scratch, case)
            if case.hang_up:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it hung up on an early part of what we sent: the frames tell
        frames = [json_body(f) for f in read_frames(sock, deadline)]
    errors = [message for message in frames if "error" in message]
    final = [message for message in errors if message.get("id") == 0]
    if case.expect == ERROR:
        assert final, (case, frames)
    if case.expect == END:
        assert not final, (case, frames)
    for message in final:
        assert set(message["error"]) == {"code", "message"}, message
    assert len(final) <= 1 and (not final or frames[-1] is final[0]), (case, frames)


def send_case(sock: socket.socket, scratch: Path, case: Case) -> None:
    if not case.fds:
        sock.sendall(case.data)
        return
    opened: list[int] = []
    try:
        if case.fds == "pipe":
            read_end, write_end = os.pipe()
            opened += [read_end, write_end]
            fds = [read_end]
        elif case.fds == "o_path":
            opened.append(os.open(scratch, os.O_PATH | os.O_DIRECTORY))
            fds = opened[:]
        elif case.fds == "file":
            opened.append(os.open(scratch / "plain", os.O_RDONLY))
            fds = opened[:]
        else:  # "many", "ahead": pipes
            read_end, write_end = os.pipe()
            opened += [read_end, write_end]
            fds = [read_end] * 4
        send_fds(sock, case.data, fds)
        if case.fds == "many":
            send_fds(sock, request({"op": "status", "id": 3}), [write_end] * 3)
        elif case.fds in ("pipe", "o_path", "file"):
            # The refused registration is answered (an error with its id); then a frame
            # that breaks the protocol ends the connection.
            sock.sendall(frame(b"\xff", kind=9))
    finally:
        for fd in opened:
            os.close(fd)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(cases(), min_size=20, max_size=60))
def fuzz(path: str, scratch: Path, counter: list[int], batch: list[Case]) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        for done in pool.map(lambda case: run_case(path, scratch, case), batch):
            assert done is None
    counter[0] += len(batch)


# -- the test --------------------------------------------------------------------------------


async def good_round(client: aioduet.abc.Duet, root: Path, data: Path) -> None:
    uuid = uuid_of(data)
    evict(data)
    with anyio.fail_after(20):
        await _good_round(client, root, data, uuid)


async def _good_round(client: aioduet.abc.Duet, root: Path, data: Path, uuid: aioduet.Uuid) -> None:
    async with client.register("good", Event.ADDED, root) as task:
        await task.wait_scanned()  # its event may share a read with the register answer
        read_pages(data)
        items = await collect(task, lambda got: len(pages(got, uuid, Event.ADDED)) >= 16)
        assert pages(items, uuid, Event.ADDED) == set(range(16))
        assert await task.get_path(uuid) == str(data)
        status = await client.status()
        assert task.id in {listed.id for listed in status.tasks}


async def settled(daemon: DaemonProcess, fds: int, rss: int) -> None:
    with anyio.fail_after(15):  # polls /proc: there is no event to wait on
        while daemon.fd_count() != fds or daemon.rss_bytes() > rss + 20 * MiB:  # noqa: ASYNC110
            await anyio.sleep(0.05)


async def test_malformed_frames_get_an_error_and_an_end(
    daemon: DaemonProcess, ext4_dir: Path
) -> None:
    scratch = ext4_dir / "scratch"
    scratch.mkdir()
    (scratch / "plain").write_text("a file, not a directory")
    data = write_clean(ext4_dir / "good" / "data", 16)
    counter = [0]
    rounds = 0
    async with aioduet.connect(daemon.socket_path) as client:
        await good_round(client, data.parent, data)  # warms every code path up
        # The baseline and the end are measured alike: this one client, idle, no tasks.
        fds_before, rss_before = daemon.fd_count(), daemon.rss_bytes()
        done = anyio.Event()

        async def fuzzing() -> None:
            try:
                await anyio.to_thread.run_sync(fuzz, daemon.socket_path, scratch, counter)
            finally:
                done.set()

        async with anyio.create_task_group() as group:
            group.start_soon(fuzzing)
            while not done.is_set():
                await good_round(client, data.parent, data)
                rounds += 1
        await good_round(client, data.parent, data)  # and after
        await settled(daemon, fds_before, rss_before)
    assert counter[0] >= 1000, counter
    assert rounds >= 3, rounds
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.log
