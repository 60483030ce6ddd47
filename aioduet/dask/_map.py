"""The client side: install the plugins, ask where inputs are cached, map with placement."""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from dask.base import tokenize
from dask.utils import funcname
from distributed import Client, Future, get_worker

from ..errors import NotInstalled
from ._placement import check_key
from ._plugins import (
    DEFAULT_MAX_BYTES,
    REPORTER_NAME,
    ResidencyBoard,
    ResidencyReporter,
)
from ._summary import ResidencySummary

__all__ = ["board", "cache_aware_map", "cache_aware_map_async", "install", "plan"]

T = TypeVar("T")

Input = str | Sequence[str]
"""One task's input: a file, or several, relative to the workers' data root."""


def install(
    client: Client,
    root: str | Path,
    *,
    sources: str | Sequence[str] = "auto",
    daemon: str | None = None,
    interval: float = 0.5,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Install the residency board on the scheduler and a reporter on every worker.

    Workers that join later get the reporter too. The board goes first, so that no report
    reaches a scheduler that cannot take it. See :class:`ResidencyReporter` for the
    arguments.

    Raises:
        ValueError: bad ``interval`` or ``max_bytes``.
        Exception: a worker could not start its reporter (its data root is not a
            directory, the sources cannot run there); Dask raises the worker's error.
    """
    reporter = ResidencyReporter(
        root, sources=sources, daemon=daemon, interval=interval, max_bytes=max_bytes
    )
    if client.asynchronous:
        raise TypeError("install() needs a synchronous Client; register the plugins yourself")
    client.register_plugin(ResidencyBoard())
    client.register_plugin(reporter)


def board(client: Client) -> dict[str, ResidencySummary]:
    """The scheduler's board: the latest residency summary of each worker, by address.

    Raises:
        NotInstalled: the scheduler has no residency board (call :func:`install`).
    """
    wire = _ask(client, "aioduet_board")
    return {worker: ResidencySummary.from_wire(summary) for worker, summary in wire.items()}


def plan(client: Client, paths: Iterable[Input], *, min_bytes: int = 1) -> list[str | None]:
    """Per task, the worker caching most of its input (None: no worker caches enough of it).

    Args:
        client: a synchronous client.
        paths: per task, its input: a path, or a sequence of paths, relative to the data root.
        min_bytes: the least cached input that makes a worker preferred.

    Raises:
        NotInstalled: the scheduler has no residency board (call :func:`install`).
        ValueError: a path is absolute or leaves the root, or ``min_bytes`` is below 1.
    """
    tasks = _tasks(paths, {})
    return list(_ask(client, "aioduet_place", inputs=_listed(tasks), min_bytes=min_bytes))


def cache_aware_map(
    client: Client,
    func: Callable[[Any], T],
    paths: Iterable[Input],
    *,
    min_bytes: int = 1,
    pure: bool = True,
    **submit: Any,
) -> list[Future[T]]:
    """Map ``func`` over input files, each task on the worker that caches most of its input.

    Each task runs ``func`` on the worker's own copy of its input: ``func(root / path)`` for
    a single path, ``func(tuple of root / path)`` for a sequence of paths, where ``root`` is
    the worker's data root. A task goes to the worker whose page cache holds most of its
    input (at least ``min_bytes``), with ``allow_other_workers=True``: if that worker is
    busy, Dask may still steal the task, and if it died the task runs elsewhere. A task whose
    input no worker caches is left to Dask's normal placement, without restrictions.

    Args:
        client: a synchronous client (for an asynchronous one, :func:`cache_aware_map_async`).
        func: what a task runs.
        paths: per task, its input: a path, or a sequence of paths, relative to the data root.
        min_bytes: the least cached input that makes a worker preferred (at least 1).
        pure: as :meth:`distributed.Client.map`: equal inputs give the same key.
        submit: passed to :meth:`distributed.Client.map` (``priority``, ``resources``...),
            except ``workers``, ``allow_other_workers`` and ``key``.

    Returns:
        The futures, in the order of ``paths``.

    Raises:
        NotInstalled: the scheduler has no residency board (call :func:`install`).
        ValueError: a path is absolute or leaves the root.
        TypeError: a placement argument is in ``submit``, or the client is asynchronous.
    """
    if client.asynchronous:
        raise TypeError("cache_aware_map needs a synchronous Client: await cache_aware_map_async")
    tasks = _tasks(paths, submit)
    chosen = _ask(client, "aioduet_place", inputs=_listed(tasks), min_bytes=min_bytes)
    return _submit(client, func=func, tasks=tasks, chosen=list(chosen), pure=pure, submit=submit)


async def cache_aware_map_async(
    client: Client,
    func: Callable[[Any], T],
    paths: Iterable[Input],
    *,
    min_bytes: int = 1,
    pure: bool = True,
    **submit: Any,
) -> list[Future[T]]:
    """:func:`cache_aware_map` for an asynchronous client (``Client(asynchronous=True)``)."""
    tasks = _tasks(paths, submit)
    chosen: list[str | None] | None = await client.scheduler.aioduet_place(  # type: ignore[union-attr]  # a client has a scheduler once started
        inputs=_listed(tasks), min_bytes=min_bytes
    )
    if chosen is None:
        raise NotInstalled(_MISSING)
    return _submit(client, func=func, tasks=tasks, chosen=list(chosen), pure=pure, submit=submit)


# -- on the client ------------------------------------------------------------------------


def _files(task: Input) -> str | tuple[str, ...]:
    """A task's input checked: one path stays a str, a sequence becomes a tuple."""
    if isinstance(task, str):
        return check_key(task)
    files = tuple(check_key(path) for path in task)
    if not files:
        raise ValueError("a task's input must name at least one file")
    return files


def _tasks(paths: Iterable[Input], submit: dict[str, Any]) -> list[str | tuple[str, ...]]:
    clash = {"workers", "allow_other_workers", "key"} & submit.keys()
    if clash:
        raise TypeError(f"cache_aware_map chooses {', '.join(sorted(clash))} itself")
    if isinstance(paths, str):
        raise TypeError("paths must be a list of inputs, not a single str")
    return [_files(task) for task in paths]


def _listed(tasks: list[str | tuple[str, ...]]) -> list[list[str]]:
    return [[files] if isinstance(files, str) else list(files) for files in tasks]


_MISSING = "the scheduler has no aioduet residency board: call aioduet.dask.install(client, root)"


def _ask(client: Client, op: str, **kwargs: Any) -> Any:
    """Call the board's handler ``op`` on the scheduler.

    Raises:
        NotInstalled: the scheduler has no such handler (Dask answers None, and logs it).
    """
    answer = client.sync(getattr(client.scheduler, op), **kwargs)  # type: ignore[no-untyped-call]  # Client.sync is untyped
    if answer is None:
        raise NotInstalled(_MISSING)
    return answer


def _submit(
    client: Client,
    *,
    func: Callable[[Any], T],
    tasks: list[str | tuple[str, ...]],
    chosen: list[str | None],
    pure: bool,
    submit: dict[str, Any],
) -> list[Future[T]]:
    name = funcname(func)
    keys = [
        f"{name}-{tokenize(func, files, submit) if pure else uuid_module.uuid4().hex}"
        for files in tasks
    ]
    groups: dict[str | None, list[int]] = {}
    for index, worker in enumerate(chosen):
        groups.setdefault(worker, []).append(index)
    futures: list[Future[T] | None] = [None] * len(tasks)
    for worker, indices in groups.items():
        placement: dict[str, Any] = {}
        if worker is not None:
            placement = {"workers": [worker], "allow_other_workers": True}
        batch = client.map(
            _run_local,
            [func] * len(indices),
            [tasks[i] for i in indices],
            key=[keys[i] for i in indices],
            pure=pure,
            **placement,
            **submit,
        )
        for index, future in zip(indices, batch, strict=True):
            futures[index] = future
    return [future for future in futures if future is not None]


# -- on the worker ------------------------------------------------------------------------


def _run_local(func: Callable[[Any], T], inputs: str | tuple[str, ...]) -> T:
    """Run ``func`` on this worker's copies of ``inputs``."""
    reporter = get_worker().plugins.get(REPORTER_NAME)
    root = getattr(reporter, "root", None)
    if root is None:
        raise NotInstalled(
            "this worker has no aioduet residency reporter: call aioduet.dask.install(client, root)"
        )
    if isinstance(inputs, str):
        return func(root / inputs)
    return func(tuple(root / path for path in inputs))
