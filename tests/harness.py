"""A residency source over a plain store, driven round by round (no framework, no timing)."""

from __future__ import annotations

from pathlib import Path

import anyio

import aioduet._paths
import aioduet.store
from aioduet import Event
from aioduet.sources import ResidencySource, Sink


class Harness:
    """A residency source over a plain store with one slot, driven pass by pass."""

    def __init__(self, root: Path, mask: Event, **options: int) -> None:
        self.index = aioduet._paths.PathIndex()
        self.store = aioduet.store.Store(4, relevance=self.relevant, notify=self._notify)
        self.changed = anyio.Event()
        self.slot = self.store.add_slot(mask)
        self.root = str(root)
        self.source = ResidencySource(Sink(self.store, self.index), **options)
        self.source.add_scope(self.root)

    def _notify(self, slots: int) -> None:
        self.changed.set()

    async def next_items(self) -> list[tuple[int, int, int]]:
        """Wait (at most 5 s) until something is pending, and drain it."""
        with anyio.fail_after(5):
            while not (items := self.drain()):
                await self.changed.wait()
                self.changed = anyio.Event()
        return items

    def relevant(self, key: tuple[int, int, int], slot: int) -> bool | None:
        return self.index.under(key[0], key[1], self.root)

    def drain(self) -> list[tuple[int, int, int]]:
        return [(first, count, state) for _key, first, count, state in self.store.drain(0, 1000)]
