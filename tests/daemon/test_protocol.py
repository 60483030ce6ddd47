"""The wire format: frames, item batches, request checks, errors and status values."""

from __future__ import annotations

import json

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aioduet
from aioduet import Event, Item, Uuid
from aioduet._status import SourceStatus, Status, TaskStatistics, TaskStatus
from aioduet.daemon import _protocol as wire
from aioduet.store import StoreStatistics

U64 = st.integers(0, 2**64 - 1)
STATES = st.sampled_from(
    [Event.ADDED, Event.REMOVED, Event.ADDED | Event.REMOVED, Event.DIRTY, Event.OVERFLOW]
)


@given(st.lists(st.tuples(U64, U64, U64, U64, U64, STATES), max_size=50), U64)
def test_item_batches_round_trip(raw: list[tuple[int, ...]], pending: int) -> None:
    records = [(d, i, g, x, c, int(s)) for d, i, g, x, c, s in raw]
    frame = wire.encode_items(7, 9, pending, records)  # type: ignore[arg-type]
    buffer = bytearray(frame)
    (body,) = wire.split_frames(buffer, wire.MAX_REPLY)
    assert buffer == b"" and body[0] == wire.KIND_ITEMS
    batch = wire.decode_items(body[1:])
    assert (batch.request, batch.task, batch.pending_files) == (7, 9, pending)
    assert batch.items == [Item(Uuid(d, i, g), x, c, s) for d, i, g, x, c, s in raw]


def test_truncated_or_invalid_batches_are_protocol_errors() -> None:
    body = wire.encode_items(1, 1, 0, [(1, 2, 3, 0, 1, 1)])[5:]
    with pytest.raises(aioduet.ProtocolError, match="truncated"):
        wire.decode_items(body[:-1])
    bad_state = wire.encode_items(1, 1, 0, [(1, 2, 3, 0, 1, 0x80)])[5:]
    with pytest.raises(aioduet.ProtocolError, match="invalid item"):
        wire.decode_items(bad_state)


def test_frames_split_across_reads_and_bad_lengths() -> None:
    frames = wire.encode_json({"a": 1}) + wire.encode_json({"b": 2})
    buffer = bytearray()
    seen = []
    for byte in frames:  # one byte per read
        buffer.append(byte)
        seen += list(wire.split_frames(buffer, 100))
    assert [json.loads(frame[1:]) for frame in seen] == [{"a": 1}, {"b": 2}]
    with pytest.raises(aioduet.ProtocolError, match="1 to 100"):
        list(wire.split_frames(bytearray(b"\x00\x00\x00\x00"), 100))
    with pytest.raises(aioduet.ProtocolError, match="1 to 100"):
        list(wire.split_frames(bytearray(b"\x00\x00\x01\x00x"), 100))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "no JSON"),
        (b"[1]", "JSON object"),
        (b'{"op": "dance", "id": 1}', "unknown operation"),
        (b'{"id": 1}', "unknown operation"),
        (b'{"op": "status"}', "missing fields"),
        (b'{"op": "status", "id": 1, "x": 2}', "unknown fields"),
        (b'{"op": "status", "id": true}', "'id'"),
        (b'{"op": "status", "id": 0}', "'id'"),
        (b'{"op": "fetch", "id": 1, "task": 1, "max": 2, "wait": 1}', "'wait'"),
        (b'{"op": "bmap", "id": 1, "task": 1, "flags": 1, "uuid": [1, 2]}', "'uuid'"),
        (b'{"op": "bmap", "id": 1, "task": 1, "flags": 1, "uuid": [1, 2, -3]}', "'uuid'"),
        (b'{"op": "register", "id": 1, "name": 5, "mask": 1}', "'name'"),
        (b'{"op": "register", "id": 1, "name": "' + b"n" * 300 + b'", "mask": 1}', "'name'"),
        (b"[" * 100_000, "no JSON"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(aioduet.ProtocolError, match=message):
        wire.parse_request(body)


def test_well_formed_requests_pass() -> None:
    request = wire.parse_request(
        b'{"op": "bmap", "id": 3, "task": 1, "flags": 4, "uuid": [1, 2, 18446744073709551615]}'
    )
    assert request["uuid"] == [1, 2, 2**64 - 1]


@pytest.mark.parametrize(
    ("exc", "raised"),
    [
        (aioduet.NotFound("x"), aioduet.NotFound),
        (aioduet.TooManyTasks("x"), aioduet.TooManyTasks),
        (PermissionError(1, "no", "/d"), PermissionError),
        (FileNotFoundError(2, "gone", "/d"), FileNotFoundError),
        (ValueError("bad"), ValueError),
        (TypeError("bad"), TypeError),
        (anyio.ClosedResourceError(), anyio.ClosedResourceError),
        (anyio.EndOfStream(), anyio.EndOfStream),
        (RuntimeError("boom"), aioduet.AioduetError),
    ],
)
def test_errors_cross_the_wire_as_their_kind(exc: BaseException, raised: type) -> None:
    body = wire.error_body(5, exc)
    assert body["id"] == 5
    back = wire.error_from(json.loads(json.dumps(body))["error"])
    assert isinstance(back, raised)
    if isinstance(exc, OSError) and exc.filename:
        assert exc.filename in str(back)


def test_status_round_trips_through_json() -> None:
    status = Status(
        running=True,
        max_tasks=64,
        tasks=(TaskStatus(3, "t", Event.EXISTS, "/d", TaskStatistics(1, 2, 3, 4, False)),),
        sources=(SourceStatus("residency", True, 10, budget=800, cycle_seconds=1.5),),
        store=StoreStatistics(1, 2, 3, 4),
    )
    text = json.dumps(wire.status_to_json(status))
    assert wire.status_from_json(json.loads(text)) == status
    with pytest.raises(aioduet.ProtocolError):
        wire.status_from_json({"running": True})
