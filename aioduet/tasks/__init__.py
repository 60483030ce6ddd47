"""Tasks: what applications register, iterate and mark done."""

from ._cached_first import CachedBatches, CachedFile, CachedFirst, cached_first, walk_files
from ._task import Registration, Task, TaskHost

__all__ = [
    "CachedBatches",
    "CachedFile",
    "CachedFirst",
    "Registration",
    "Task",
    "TaskHost",
    "cached_first",
    "walk_files",
]
