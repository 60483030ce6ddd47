"""The aioduet daemon: one framework served to many processes on a Unix socket.

``aioduet daemon`` (or ``aioduetd``) runs it; :func:`connect` is its client, with the interface
of the embedded framework (:class:`aioduet.abc.Duet`). The wire protocol is in docs/protocol.md.
"""

from .._sockets import DEFAULT_SOCKET_MODE, default_socket_path, find_socket
from ._client import Client, RemoteRegistration, RemoteTask, connect
from ._protocol import VERSION
from ._server import Peer, Server
from ._serving import Serving, serve

__all__ = [
    "DEFAULT_SOCKET_MODE",
    "VERSION",
    "Client",
    "Peer",
    "RemoteRegistration",
    "RemoteTask",
    "Server",
    "Serving",
    "connect",
    "default_socket_path",
    "find_socket",
    "serve",
]
