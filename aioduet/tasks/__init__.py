"""Tasks: what applications register, iterate and mark done."""

from ._task import Registration, Task, TaskHost

__all__ = ["Registration", "Task", "TaskHost"]
