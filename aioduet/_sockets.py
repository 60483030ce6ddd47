"""Where the daemon's socket is, by default: plain ``os`` code, for the command line's start-up."""

from __future__ import annotations

import os

__all__ = ["DEFAULT_SOCKET_MODE", "default_socket_path", "find_socket"]

DEFAULT_SOCKET_MODE = 0o666
"""Anyone may connect: what a client may see is decided per request (see docs/protocol.md)."""


def default_socket_path(uid: int | None = None) -> str:
    """Where the daemon listens by default: ``/run/aioduet/aioduet.sock`` for root,
    ``$XDG_RUNTIME_DIR/aioduet.sock`` for other users (``/run/user/UID`` without it)."""
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return "/run/aioduet/aioduet.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{uid}"
    return os.path.join(runtime, "aioduet.sock")


def find_socket() -> str:
    """The socket a client connects to by default.

    ``$AIODUET_SOCKET`` if set; otherwise the user's own daemon's socket if it exists, else
    the system daemon's (``/run/aioduet/aioduet.sock``).
    """
    chosen = os.environ.get("AIODUET_SOCKET")
    if chosen:
        return chosen
    own = default_socket_path()
    if os.geteuid() != 0 and not os.path.exists(own):
        return default_socket_path(0)
    return own
