"""aioduet: page-cache events for asyncio, Duet's task framework rebuilt in user space.

Register a task for a directory and an event mask, and iterate the items it receives::

    async with aioduet.open_duet() as duet:
        async with duet.register("backup", Event.EXISTS, "/data") as task:
            async for item in task:
                path = await task.get_path(item.uuid)
"""

# The public names are imported on first use (PEP 562), all at once: importing them means
# importing anyio, attrs and the whole framework, a tenth of a second that the command line's
# `scan`, which needs none of it, should not pay. ``import aioduet`` alone imports nothing.

from importlib import import_module as _import_module
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from ._framework import Duet as Duet
    from ._framework import open_duet as open_duet
    from ._model import Bmap as Bmap
    from ._model import Event as Event
    from ._model import Item as Item
    from ._model import Uuid as Uuid
    from ._status import SourceStatus as SourceStatus
    from ._status import Status as Status
    from ._status import TaskStatistics as TaskStatistics
    from ._status import TaskStatus as TaskStatus
    from .daemon import connect as connect
    from .errors import AioduetError as AioduetError
    from .errors import DaemonLost as DaemonLost
    from .errors import DaemonUnavailable as DaemonUnavailable
    from .errors import NotFound as NotFound
    from .errors import NotInstalled as NotInstalled
    from .errors import ProtocolError as ProtocolError
    from .errors import RecordError as RecordError
    from .errors import ResidencyUnknown as ResidencyUnknown
    from .errors import SourceUnavailable as SourceUnavailable
    from .errors import TooManyTasks as TooManyTasks
    from .store import StoreStatistics as StoreStatistics
    from .tasks import Registration as Registration
    from .tasks import Task as Task

__version__ = "0.1.0"

__all__ = [
    "AioduetError",
    "Bmap",
    "DaemonLost",
    "DaemonUnavailable",
    "Duet",
    "Event",
    "Item",
    "NotFound",
    "NotInstalled",
    "ProtocolError",
    "RecordError",
    "Registration",
    "ResidencyUnknown",
    "SourceStatus",
    "SourceUnavailable",
    "Status",
    "StoreStatistics",
    "Task",
    "TaskStatistics",
    "TaskStatus",
    "TooManyTasks",
    "Uuid",
    "connect",
    "open_duet",
]

_WHERE = {
    "._framework": ("Duet", "open_duet"),
    "._model": ("Bmap", "Event", "Item", "Uuid"),
    "._status": ("SourceStatus", "Status", "TaskStatistics", "TaskStatus"),
    ".errors": (
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
    ),
    ".store": ("StoreStatistics",),
    ".tasks": ("Registration", "Task"),
}


def _load() -> dict[str, object]:
    """Import every public name into the package's namespace; returns that namespace."""
    namespace = globals()
    for module, names in _WHERE.items():
        imported = _import_module(module, __name__)
        namespace.update((name, getattr(imported, name)) for name in names)
    return namespace


def __getattr__(name: str) -> object:
    if name == "connect":  # the daemon's client: its own imports, only when asked for
        from .daemon import connect  # noqa: PLC0415

        globals()["connect"] = connect
        return connect
    if name in __all__:
        return _load()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
