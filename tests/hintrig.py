"""What the hint sources' tests share: a recording checker, a sink around it, bounded waits."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import anyio
import attrs

from aioduet._paths import PathIndex
from aioduet.sources import Sink
from aioduet.store import Observation, Store


@attrs.define
class FakeChecker:
    """Records what a hint source asks of the residency scanner."""

    checked: list[str] = attrs.Factory(list)
    batches: int = 0
    trees: list[str] = attrs.Factory(list)
    gone: list[str] = attrs.Factory(list)
    moved: list[tuple[str, str]] = attrs.Factory(list)
    rescans: list[str | None] = attrs.Factory(list)

    def check_paths(self, paths: Iterable[str]) -> None:
        paths = list(paths)
        assert len(paths) == len(set(paths)), "hints of one batch are de-duplicated"
        self.batches += 1
        self.checked.extend(paths)

    def check_tree(self, path: str) -> None:
        self.trees.append(path)

    def path_gone(self, path: str) -> None:
        self.gone.append(path)

    def path_moved(self, old: str, new: str) -> None:
        self.moved.append((old, new))

    def check_dirty(self) -> None:
        raise AssertionError("a hint source about files never asks for dirty checks")

    def rescan(self, root: str | None) -> None:
        self.rescans.append(root)

    def cut(self, dev: int, ino: int, end: int) -> None:
        raise AssertionError("a hint source about files never reports truncations")


class NoIntro:
    """A registration scan that a hint source must never feed."""

    @property
    def slot(self) -> int:
        raise AssertionError("a hint source does not scan")

    def looking(self) -> None:
        raise AssertionError("a hint source does not scan")

    def cover(self, inodes: Iterable[tuple[int, int]]) -> None:
        raise AssertionError("a hint source does not scan")

    def deliver(self, observations: Sequence[Observation]) -> None:
        raise AssertionError("a hint source does not scan")


def recording_sink(overflows: list[str | None]) -> Sink:
    """A sink over a store that finds everything relevant; lost roots go to ``overflows``."""
    store = Store(8, relevance=lambda key, slot: True, notify=lambda slots: None)
    return Sink(store, PathIndex(), overflow=overflows.append)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(condition: Callable[[], object], seconds: float = 5) -> None:
    """Wait (boundedly) until the fake checker or the source shows ``condition``."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 -- polls plain objects, nothing to wait on
            await anyio.sleep(0.005)
