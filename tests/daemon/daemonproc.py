"""Helpers for the daemon's tests: a daemon in a subprocess, raw protocol frames, /proc readings.

The daemon runs as ``python -m aioduet daemon`` (a real process, as in production); its log
(stderr) is drained by a thread so that thousands of logged protocol violations never block
it, and "ready" is the log line it writes once its socket listens, so nothing sleeps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from aioduet.daemon._protocol import KIND_JSON

READY_SECONDS = 20.0
_LENGTH = struct.Struct(">I")


@attrs.define(eq=False)
class DaemonProcess:
    """``aioduet daemon`` in a subprocess, its log collected line by line."""

    socket_path: str
    proc: subprocess.Popen[str]
    lines: list[str] = attrs.field(factory=list)
    ready: threading.Event = attrs.field(factory=threading.Event)
    ended: threading.Event = attrs.field(factory=threading.Event)
    _grew: threading.Condition = attrs.field(factory=threading.Condition)

    @classmethod
    def start(
        cls, socket_path: str | Path, options: Sequence[str] = (), *, wait: bool = True
    ) -> DaemonProcess:
        """Start a daemon on ``socket_path``; with ``wait``, return once it listens."""
        argv = [sys.executable, "-m", "aioduet", "daemon", "--socket", str(socket_path)]
        argv += list(options)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        daemon = cls(str(socket_path), proc)
        threading.Thread(target=daemon._drain, daemon=True).start()
        if wait:
            daemon.wait_ready()
        return daemon

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._grew:
                self.lines.append(line)
                self._grew.notify_all()
            if " ready: " in line:
                self.ready.set()
        with self._grew:
            self.ended.set()
            self._grew.notify_all()
        self.ready.set()  # wake a waiter: it sees the process ended

    def wait_for_log(self, text: str, seconds: float = 15.0) -> None:
        """Return once ``text`` is in the log; AssertionError if it ended or took too long."""
        with self._grew:
            found = self._grew.wait_for(lambda: text in self.log or self.ended.is_set(), seconds)
        assert found and text in self.log, f"no {text!r} in the daemon's log:\n{self.log}"

    def wait_ready(self) -> None:
        if not self.ready.wait(READY_SECONDS) or self.ended.is_set():
            self.kill()
            raise AssertionError(f"the daemon did not start:\n{self.log}")
        # It logs "ready" after its socket listens: a connection must be accepted now.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(self.socket_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_exit(self, seconds: float = 15.0) -> int:
        """The exit status, once the process ended and its log is read to the end."""
        code = self.proc.wait(seconds)
        self.ended.wait(seconds)
        return code

    def signal(self, signum: int) -> None:
        if self.proc.returncode is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL by pid (if still running) and reap."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.ended.wait(10)
            self.proc.stdout.close()

    def fd_count(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_bytes(self) -> int:
        return rss_bytes(self.pid)


def rss_bytes(pid: int) -> int:
    """VmRSS of a process."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- raw frames --------------------------------------------------------------------------


def frame(body: bytes, kind: int = KIND_JSON) -> bytes:
    """A frame as the protocol lays it out: length of kind + body, kind, body."""
    return _LENGTH.pack(len(body) + 1) + bytes((kind,)) + body


def request(message: object) -> bytes:
    """A JSON frame of any JSON value."""
    return frame(json.dumps(message, separators=(",", ":")).encode())


HELLO = request({"op": "hello", "version": 1, "id": 1})


def raw_connect(path: str, timeout: float = 10.0) -> socket.socket:
    """A blocking Unix socket to the daemon, with a timeout on every call."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    return sock


def send_fds(sock: socket.socket, data: bytes, fds: Sequence[int]) -> None:
    """Send ``data`` with ``fds`` (SCM_RIGHTS) in one sendmsg."""
    sent = socket.send_fds(sock, [data], list(fds))
    if sent < len(data):
        sock.sendall(data[sent:])


def read_frames(sock: socket.socket, deadline: float) -> list[tuple[int, bytes]]:
    """Every frame the daemon sends until it closes the connection: ``(kind, body)``.

    Raises:
        AssertionError: a frame is malformed, or the daemon did not close by ``deadline``
            (a :func:`time.monotonic` value).
    """
    buffer = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"the daemon kept the connection open; got {bytes(buffer)[:200]!r}"
            )
        sock.settimeout(left)
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except ConnectionResetError:
            data = b""  # it closed with our unread bytes in its buffer: also an end
        if not data:
            break
        buffer += data
    frames = []
    view = bytes(buffer)
    while view:
        assert len(view) >= 5, f"a truncated frame at the end: {view!r}"
        (length,) = _LENGTH.unpack_from(view)
        assert 1 <= length <= len(view) - 4, f"a frame of {length} bytes in {len(view)}"
        frames.append((view[4], view[5 : 4 + length]))
        view = view[4 + length :]
    return frames


def json_body(kind_body: tuple[int, bytes]) -> dict[str, Any]:
    kind, body = kind_body
    assert kind == KIND_JSON, f"a frame of kind {kind}, expected JSON"
    message = json.loads(body)
    assert isinstance(message, dict), message
    return message


def call(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> dict[str, Any]:
    """Send one request and read JSON frames until its answer (skipping events)."""
    data = request(message)
    if fds:
        send_fds(sock, data, fds)
    else:
        sock.sendall(data)
    buffer = b""
    while True:
        while len(buffer) < 4 or len(buffer) < 4 + _LENGTH.unpack_from(buffer)[0]:
            chunk = sock.recv(1 << 16)
            assert chunk, f"the daemon hung up instead of answering {message}"
            buffer += chunk
        (length,) = _LENGTH.unpack_from(buffer)
        reply = json_body((buffer[4], buffer[5 : 4 + length]))
        buffer = buffer[4 + length :]
        if "event" not in reply:
            assert reply.get("id") == message["id"], (reply, message)
            return reply
