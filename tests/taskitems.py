"""Helpers for tests that wait for items of real tasks."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import anyio
from pagecache import opened, uuid_of

import aioduet
import aioduet.abc
from aioduet import Event, Item, Uuid, _kernel


def pages(items: list[Item], uuid: Uuid, bit: Event) -> set[int]:
    """The pages of ``uuid`` that items with ``bit`` in their state cover."""
    return {p for item in items if item.uuid == uuid and item.state & bit for p in item.pages}


def has(items: list[Item], uuid: Uuid, bit: Event) -> bool:
    """Whether some item of ``uuid`` has ``bit`` in its state."""
    return any(item.uuid == uuid and item.state & bit for item in items)


async def collect(
    task: aioduet.Task, until: Callable[[list[Item]], bool], seconds: float = 15
) -> list[Item]:
    """Fetch until ``until(items)`` holds: a bounded wait, no sleeping."""
    items: list[Item] = []
    with anyio.fail_after(seconds):
        while not until(items):
            items += await task.fetch()
    return items


def apply_exists(view: dict[Uuid, set[int]], items: list[Item]) -> None:
    """Update an EXISTS task's picture of the cache (pages per file) with ``items``.

    An OVERFLOW empties it: the scope's current state follows, as at registration.
    """
    for item in items:
        if item.state & Event.OVERFLOW:
            view.clear()
            continue
        cached = view.setdefault(item.uuid, set())
        if item.state & Event.ADDED:
            cached.update(item.pages)
        if item.state & Event.REMOVED:
            cached.difference_update(item.pages)


def residency_passes(status: aioduet.Status) -> int:
    """Complete walks of the residency source so far."""
    return next(s for s in status.sources if s.name == "residency").passes


def truth(path: Path) -> set[int]:
    """The pages of ``path`` in the page cache now, as cachestat counts them (the oracle)."""
    with opened(path) as fd:
        size = os.fstat(fd).st_size
        return {f + k for f, n in _kernel.page_runs(fd, size, "cache") for k in range(n)}


async def converge(
    task: aioduet.abc.Task,
    view: dict[Uuid, set[int]],
    present: Iterable[Path],
    gone: Iterable[Uuid] = (),
    *,
    seconds: float = 20,
) -> None:
    """Fetch until an EXISTS task's ``view`` equals the cache for ``present`` files, and
    holds no page of the ``gone`` ones (deleted, replaced, or moved out of the scope).

    The cache is read again on every round: the reclaim daemon evicts at its own pace, and
    the task must follow. Raises TimeoutError with the differences when it does not.
    """
    files = list(present)
    lost = list(gone)
    wrong: dict[str, object] = {}
    try:
        with anyio.fail_after(seconds):
            while True:
                wrong = {}
                for path in files:
                    expected = truth(path)
                    seen = view.get(uuid_of(path), set())
                    if seen != expected:
                        wrong[str(path) + " " + str(uuid_of(path))] = (len(seen), len(expected))
                for uuid in lost:
                    if view.get(uuid):
                        wrong[str(uuid)] = len(view[uuid])
                if not wrong:
                    return
                with anyio.move_on_after(0.25):
                    apply_exists(view, await task.fetch(100_000))
    except TimeoutError:
        raise AssertionError(f"the task's view did not converge: {wrong}") from None
