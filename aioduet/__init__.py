"""aioduet: page-cache events for asyncio, Duet's task framework rebuilt in user space.

Register a task for a directory and an event mask, and iterate the items it receives::

    async with aioduet.open_duet() as duet:
        async with duet.register("backup", Event.EXISTS, "/data") as task:
            async for item in task:
                path = await task.get_path(item.uuid)
"""

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
from .errors import AioduetError as AioduetError
from .errors import NotFound as NotFound
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
    "Duet",
    "Event",
    "Item",
    "NotFound",
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
    "open_duet",
]
