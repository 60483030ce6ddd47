"""The exceptions aioduet raises.

One base class, and leaves that also subclass the nearest builtin so that callers who
catch the builtin keep working::

    AioduetError
    ├── NotFound            (LookupError)      get_path outside the task's root, vanished file
    ├── TooManyTasks        (RuntimeError)     register() beyond the framework's max_tasks
    ├── SourceUnavailable   (OSError)          a source or kernel interface cannot run here
    ├── ResidencyUnknown    (OSError)          the kernel refused to say what of a file is cached
    ├── DaemonUnavailable   (ConnectionError)  connect(): no daemon answers on the socket
    ├── DaemonLost          (ConnectionError)  the daemon's connection broke under a client
    ├── ProtocolError       (ValueError)       a frame broke the daemon protocol (docs/protocol.md)
    ├── RecordError         (ValueError)       a recording file is truncated, foreign or malformed
    └── NotInstalled        (RuntimeError)     aioduet.dask: the cluster lacks the residency plugins

Closed and exhausted streams use anyio's own exceptions: :class:`anyio.ClosedResourceError`
(the task was closed by its owner), :class:`anyio.EndOfStream` (the framework closed under
it) and :class:`anyio.WouldBlock`.
"""

from __future__ import annotations

__all__ = [
    "AioduetError",
    "DaemonLost",
    "DaemonUnavailable",
    "NotFound",
    "NotInstalled",
    "ProtocolError",
    "RecordError",
    "ResidencyUnknown",
    "SourceUnavailable",
    "TooManyTasks",
]


class AioduetError(Exception):
    """Base class of every exception that aioduet raises on its own account."""


class NotFound(AioduetError, LookupError):
    """A file is not under the task's root, or no longer exists."""


class TooManyTasks(AioduetError, RuntimeError):
    """The framework already runs ``max_tasks`` tasks."""


class SourceUnavailable(AioduetError, OSError):
    """A source or kernel interface cannot be used on this machine; the message says why."""


class ResidencyUnknown(AioduetError, OSError):
    """The kernel would not report a file's residency (for example ``EPERM`` from cachestat).

    Such a file is reported as *unknown*, never as cached.
    """


class DaemonUnavailable(AioduetError, ConnectionError):
    """No aioduet daemon answers on the socket (none runs, or the socket cannot be reached)."""


class DaemonLost(AioduetError, ConnectionError):
    """The connection to the daemon broke (the daemon died or was killed).

    Fetches and iterations raise it once the items already received are taken; nothing the
    daemon held for the client's tasks can be recovered, and those tasks are gone.
    """


class ProtocolError(AioduetError, ValueError):
    """A frame broke the daemon protocol: the daemon answers it with an error and hangs up."""


class RecordError(AioduetError, ValueError):
    """A recording (``aioduet record``) cannot be read: truncated, foreign or malformed.

    The message is one line naming the file and the problem (docs/commands/record.md
    describes the format).
    """


class NotInstalled(AioduetError, RuntimeError):
    """``aioduet.dask``: the scheduler or a worker lacks the residency plugins (``install``)."""
