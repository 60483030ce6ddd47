"""The exceptions aioduet raises.

One base class, and leaves that also subclass the nearest builtin so that callers who
catch the builtin keep working::

    AioduetError
    ├── NotFound            (LookupError)      get_path outside the task's root, vanished file
    ├── TooManyTasks        (RuntimeError)     register() beyond the framework's max_tasks
    ├── SourceUnavailable   (OSError)          a source or kernel interface cannot run here
    └── ResidencyUnknown    (OSError)          the kernel refused to say what of a file is cached

Closed and exhausted streams use anyio's own exceptions: :class:`anyio.ClosedResourceError`
(the task was closed by its owner), :class:`anyio.EndOfStream` (the framework closed under
it) and :class:`anyio.WouldBlock`.
"""

from __future__ import annotations

__all__ = [
    "AioduetError",
    "NotFound",
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
