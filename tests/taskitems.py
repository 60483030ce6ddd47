"""Helpers for tests that wait for items of real tasks."""

from __future__ import annotations

from collections.abc import Callable

import anyio

import aioduet
from aioduet import Event, Item, Uuid


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
