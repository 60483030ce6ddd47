"""The daemon's wire protocol, version 1: frames, their checks, errors and status values.

Both ends use this module; docs/protocol.md describes the same thing for other languages.
A frame is a 4-byte big-endian length (of what follows), one byte of kind, and a body:
a JSON object (kind 1) or a batch of items (kind 2, daemon to client only).
"""

from __future__ import annotations

import json
import struct
import sys
from array import array
from collections.abc import Iterator, Mapping
from typing import Any

import anyio
import attrs

from .._model import Event, Item, Uuid
from .._status import SourceStatus, Status, TaskStatistics, TaskStatus
from ..errors import (
    AioduetError,
    DaemonUnavailable,
    NotFound,
    ProtocolError,
    SourceUnavailable,
    TooManyTasks,
)
from ..store import StoreStatistics

__all__ = [
    "KIND_ITEMS",
    "KIND_JSON",
    "MAX_FETCH",
    "MAX_REPLY",
    "MAX_REQUEST",
    "VERSION",
    "ItemBatch",
    "decode_items",
    "encode_items",
    "encode_json",
    "error_body",
    "error_from",
    "parse_request",
    "split_frames",
    "status_from_json",
    "status_to_json",
]

VERSION = 1
KIND_JSON = 1
KIND_ITEMS = 2
MAX_REQUEST = 64 * 1024
"""The longest frame a client may send (the daemon hangs up on longer ones)."""
MAX_FETCH = 4096
"""The most items one fetch may ask for."""
MAX_REPLY = 16 + MAX_FETCH * 48 + 1024 * 1024
"""The longest frame the daemon sends (a status with every task, a full batch)."""
MAX_NAME = 256
_U64 = 1 << 64
_U32 = 1 << 32
_LENGTH = struct.Struct(">I")
_ITEMS_HEADER = struct.Struct("<IIQ")
"""Request id, task id, files pending for the task after this batch."""
_FIELDS = 6
_SWAP = sys.byteorder != "little"

#: Per operation: the fields of its request besides ``op`` and ``id``, and their types.
_SCHEMAS: dict[str, dict[str, str]] = {
    "hello": {"version": "int"},
    "register": {"name": "str", "mask": "int"},
    "fetch": {"task": "u32", "max": "int", "wait": "bool"},
    "bmap": {"task": "u32", "flags": "int", "uuid": "uuid"},
    "get_path": {"task": "u32", "uuid": "uuid"},
    "close": {"task": "u32"},
    "status": {},
    "shutdown": {},
}


# -- frames ------------------------------------------------------------------------------


def encode_json(message: Mapping[str, Any]) -> bytes:
    """One JSON frame."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(body) + 1) + bytes((KIND_JSON,)) + body


def split_frames(buffer: bytearray, limit: int) -> Iterator[bytes]:
    """Take the complete frames (kind byte and body) off the front of ``buffer``.

    Raises:
        ProtocolError: a length of 0 or above ``limit``.
    """
    while len(buffer) >= 4:
        (length,) = _LENGTH.unpack_from(buffer)
        if not 0 < length <= limit:
            raise ProtocolError(f"a frame of {length} bytes (1 to {limit} are allowed)")
        if len(buffer) < 4 + length:
            return
        frame = bytes(buffer[4 : 4 + length])
        del buffer[: 4 + length]
        yield frame


def encode_items(
    request: int, task: int, pending_files: int, raw: list[tuple[int, int, int, int, int, int]]
) -> bytes:
    """One ITEMS frame: a header, then six little-endian u64 per item."""
    values = array("Q", [value for item in raw for value in item])
    if _SWAP:
        values.byteswap()
    body = _ITEMS_HEADER.pack(request, task, pending_files) + values.tobytes()
    return _LENGTH.pack(len(body) + 1) + bytes((KIND_ITEMS,)) + body


class ItemBatch:
    """A decoded ITEMS frame."""

    __slots__ = ("items", "pending_files", "request", "task")

    def __init__(self, request: int, task: int, pending_files: int, items: list[Item]) -> None:
        self.request = request
        self.task = task
        self.pending_files = pending_files
        self.items = items


def decode_items(body: bytes) -> ItemBatch:
    """Decode the body of an ITEMS frame (after the kind byte).

    Raises:
        ProtocolError: a truncated frame or an item that is no valid :class:`Item`.
    """
    header = _ITEMS_HEADER.size
    if len(body) < header or (len(body) - header) % (8 * _FIELDS):
        raise ProtocolError(f"an ITEMS frame of {len(body)} bytes is truncated")
    request, task, pending = _ITEMS_HEADER.unpack_from(body)
    values = array("Q")
    values.frombytes(body[header:])
    if _SWAP:
        values.byteswap()
    fields = iter(values)
    uuids: dict[tuple[int, int, int], Uuid] = {}
    items = []
    try:
        for dev, ino, gen, index, count, state in zip(*[fields] * _FIELDS, strict=True):
            key = (dev, ino, gen)
            uuid = uuids.get(key)
            if uuid is None:
                uuid = uuids[key] = Uuid(dev, ino, gen)
            items.append(Item(uuid, index, count, Event(state)))
    except ValueError as exc:
        raise ProtocolError(f"an ITEMS frame holds an invalid item: {exc}") from None
    return ItemBatch(request, task, pending, items)


# -- requests ----------------------------------------------------------------------------


def parse_request(body: bytes) -> dict[str, Any]:
    """Decode and check a client's JSON request (the frame's body, after the kind byte).

    Returns the object, whose fields have the types the operation's schema says.

    Raises:
        ProtocolError: not JSON, not an object, an unknown operation, missing, unknown or
            mistyped fields.
    """
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ProtocolError(f"a request is no JSON: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a request is a JSON object, not {type(message).__name__}")
    op = message.get("op")
    schema = _SCHEMAS.get(op) if isinstance(op, str) else None
    if schema is None or not isinstance(op, str):
        raise ProtocolError(f"unknown operation {str(op)[:40]!r}")
    expected = {"op", "id", *schema}
    if set(message) != expected:
        missing = sorted(expected - set(message))
        extra = sorted(set(message) - expected)
        raise ProtocolError(f"{op}: missing fields {missing}, unknown fields {extra[:8]}")
    _check(op, "id", message["id"], "u32")
    for field, kind in schema.items():
        _check(op, field, message[field], kind)
    return message


def _check(op: str, field: str, value: object, kind: str) -> None:
    ok: bool
    if kind == "str":
        ok = isinstance(value, str) and len(value) <= MAX_NAME
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "uuid":
        ok = (
            isinstance(value, list)
            and len(value) == 3
            and all(_is_int(part) and 0 <= part < _U64 for part in value)
        )
    elif kind == "u32":
        ok = _is_int(value) and 0 < value < _U32  # type: ignore[operator]
    else:
        ok = _is_int(value) and -_U64 < value < _U64  # type: ignore[operator]
    if not ok:
        raise ProtocolError(f"{op}: field {field!r} must be {_KIND_NAMES[kind]}")


_KIND_NAMES = {
    "str": f"a string of at most {MAX_NAME} characters",
    "bool": "true or false",
    "uuid": "a list of three integers [dev, ino, gen] in 0..2**64-1",
    "u32": "an integer in 1..2**32-1",
    "int": "an integer",
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- errors ------------------------------------------------------------------------------

#: Error codes on the wire, and the exception a client raises for each (first match wins
#: when the daemon encodes an exception).
_ERRORS: tuple[tuple[str, type[BaseException]], ...] = (
    ("protocol", ProtocolError),
    ("not_found", NotFound),
    ("too_many", TooManyTasks),
    ("unavailable", SourceUnavailable),
    ("busy", DaemonUnavailable),
    ("file_not_found", FileNotFoundError),
    ("not_a_directory", NotADirectoryError),
    ("permission", PermissionError),
    ("closed", anyio.ClosedResourceError),
    ("end", anyio.EndOfStream),
    ("type", TypeError),
    ("value", ValueError),
)
_BY_CODE = dict(_ERRORS)


def error_body(request: int, exc: BaseException, code: str | None = None) -> dict[str, Any]:
    """The reply that reports ``exc`` to the client."""
    if code is None:
        code = next((c for c, kind in _ERRORS if isinstance(exc, kind)), "internal")
    message = str(exc) if not isinstance(exc, OSError) or exc.strerror is None else exc.strerror
    if isinstance(exc, OSError) and exc.filename is not None:
        message = f"{message}: {exc.filename}"
    return {"id": request, "error": {"code": code, "message": message or type(exc).__name__}}


def error_from(error: object) -> BaseException:
    """The exception a client raises for an error object from the daemon."""
    if not isinstance(error, dict):
        return ProtocolError(f"the daemon sent a malformed error: {str(error)[:80]}")
    code, message = error.get("code"), str(error.get("message", ""))
    if code == "version":
        return ProtocolError(message)
    kind = _BY_CODE.get(code) if isinstance(code, str) else None
    if kind is None:
        return AioduetError(f"the daemon failed: {message}")
    if kind in (anyio.ClosedResourceError, anyio.EndOfStream):
        return kind()
    return kind(message)


# -- status ------------------------------------------------------------------------------


def status_to_json(status: Status) -> dict[str, Any]:
    """A :class:`Status` as JSON values (masks as ints)."""
    return {
        "running": status.running,
        "max_tasks": status.max_tasks,
        "tasks": [
            {
                "id": task.id,
                "name": task.name,
                "mask": int(task.mask),
                "path": task.path,
                "statistics": _fields(task.statistics),
            }
            for task in status.tasks
        ],
        "sources": [_fields(source) for source in status.sources],
        "store": _fields(status.store),
    }


def _fields(value: SourceStatus | TaskStatistics | StoreStatistics) -> dict[str, Any]:
    return attrs.asdict(value, recurse=False)


def status_from_json(value: object) -> Status:
    """The :class:`Status` a daemon sent.

    Raises:
        ProtocolError: the value does not describe a status.
    """
    if not isinstance(value, dict):
        raise ProtocolError(f"the daemon sent a status that is no object: {str(value)[:80]}")
    try:
        return Status(
            running=bool(value["running"]),
            max_tasks=int(value["max_tasks"]),
            tasks=tuple(
                TaskStatus(
                    id=int(task["id"]),
                    name=str(task["name"]),
                    mask=Event(int(task["mask"])),
                    path=str(task["path"]),
                    statistics=TaskStatistics(**task["statistics"]),
                )
                for task in value["tasks"]
            ),
            sources=tuple(SourceStatus(**source) for source in value["sources"]),
            store=StoreStatistics(**value["store"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"the daemon sent a malformed status: {exc}") from None
