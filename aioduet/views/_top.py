"""``top``'s model and rendering: the most-cached and the fastest-changing files of a tree.

:class:`TopModel` applies a state-based task's items to a :class:`ResidencyView`, and on
each refresh (:meth:`TopModel.refresh`) closes a sample of activity, turns the samples of the
last few seconds into per-file rates, resolves the paths of the rows it will show (once per
file) and asks ``cachestat`` for their dirty and writeback pages: writeback is not an item
event, and the dirty pages of the moment are the kernel's to tell. :func:`render` turns the
resulting :class:`TopSnapshot` into a ``rich`` renderable, with no I/O of its own, so a test
renders it into a string.

The model never reads the clock: the caller passes the times, so rates can be tested with
synthetic items and times.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio.to_thread
import attrs
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .. import _kernel
from .._model import Item, Uuid
from .._units import format_size
from ..errors import AioduetError, NotFound
from ._residency import Activity, FileResidency, ResidencyView

__all__ = ["Probe", "TopModel", "TopRow", "TopSnapshot", "TopTotals", "render"]

_Key = tuple[int, int]
#: At most this many files besides the rows shown are probed for dirty and writeback pages.
_MAX_EXTRA_PROBES = 256


@attrs.frozen
class Probe:
    """What ``cachestat`` and ``fstat`` said about one file at a refresh."""

    size: int
    """File size in bytes."""
    cached: int
    """Cached pages."""
    dirty: int
    """Dirty pages."""
    writeback: int
    """Pages under writeback."""


def probe_file(uuid: Uuid, path: str) -> Probe | None:
    """Probe the file at ``path`` if it is still the file ``uuid`` names (blocking).

    Returns:
        None when the path is gone, names another file now, or the kernel will not say.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (uuid.dev, uuid.ino) or not stat.S_ISREG(st.st_mode):
            return None
        counts = _kernel.cachestat(fd)
    except (OSError, AioduetError):  # ResidencyUnknown, SourceUnavailable: not known here
        return None
    finally:
        os.close(fd)
    return Probe(st.st_size, counts.cache, counts.dirty, counts.writeback)


def probe_files(targets: Sequence[tuple[Uuid, str]]) -> list[Probe | None]:
    """:func:`probe_file` for each ``(uuid, path)`` (blocking: run it in a thread)."""
    return [probe_file(uuid, path) for uuid, path in targets]


@attrs.frozen
class TopRow:
    """One file in a table of ``top``."""

    name: str
    """Its path relative to the root, or ``<dev N ino M>`` when the path is unknown."""
    cached: int
    """Cached pages, as the items say."""
    size: int | None
    """File size in bytes (None: unknown)."""
    dirty: int
    """Dirty pages (cachestat's at the refresh, or the items' when it could not say)."""
    writeback: int | None
    """Pages under writeback (None: unknown)."""
    added: float
    """Pages added to the cache per second, over the model's window."""
    removed: float
    """Pages removed from the cache per second, over the model's window."""


@attrs.frozen
class TopTotals:
    """Sums over the whole tree."""

    files: int
    """Files the model knows (cached, dirty, or active within the window)."""
    cached_files: int
    """Files with cached pages."""
    cached: int
    """Cached pages."""
    dirty: int
    """Dirty pages, as the items say."""
    writeback: int
    """Pages under writeback, over the files probed (the rows, and the dirty files)."""
    added: float
    """Pages added per second."""
    removed: float
    """Pages removed per second."""
    items: float
    """Items per second."""
    overflows: int
    """``OVERFLOW`` items seen (observations lost, then repaired by a rescan)."""


@attrs.frozen
class TopSnapshot:
    """What one refresh of ``top`` shows."""

    root: str
    """The directory watched."""
    window: float
    """Seconds the rates are averaged over (0 before the second refresh)."""
    scanning: bool
    """Whether the registration scan is still running (rates include what it reports)."""
    totals: TopTotals
    """Sums over the tree."""
    most_cached: tuple[TopRow, ...]
    """Files with the most cached pages, most first."""
    fastest: tuple[TopRow, ...]
    """Files with the most pages added and removed per second, fastest first."""


@attrs.frozen
class _Sample:
    start: float
    end: float
    deltas: dict[_Key, Activity]
    items: int


@attrs.define(eq=False)
class TopModel:
    """Per-file residency, rates and paths for ``top``, fed with items and clock times.

    Call :meth:`apply` with the items of a task registered for ``EXISTS | MODIFIED``, and
    :meth:`refresh` (or :meth:`tick`) with the current time at each refresh. Activity before
    the first tick, and before :meth:`settle`, is the baseline: not counted in rates.
    Files with no cached or dirty pages and no activity within the window are forgotten.
    """

    root: str
    """The task's directory: names are shown relative to it."""
    rows: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    """Rows of each table."""
    window: float = attrs.field(default=3.0, validator=attrs.validators.gt(0))
    """Seconds over which rates are averaged."""
    view: ResidencyView = attrs.field(factory=ResidencyView)
    """The page maps built from the items."""
    scanning: bool = True
    """Whether the registration scan is still running (cleared by :meth:`settle`)."""
    _since: float | None = None
    _seen: dict[_Key, tuple[FileResidency, Activity]] = attrs.field(factory=dict)
    _changed: set[_Key] = attrs.field(factory=set)
    _items_seen: int = 0
    _samples: deque[_Sample] = attrs.field(factory=deque)
    _rates: dict[_Key, tuple[float, float]] = attrs.field(factory=dict)
    _items_rate: float = 0.0
    _span: float = 0.0
    _paths: dict[Uuid, str | None] = attrs.field(factory=dict)
    _probes: dict[_Key, Probe] = attrs.field(factory=dict)

    def apply(self, items: Iterable[Item]) -> None:
        """Apply items in the order the task gave them."""
        self._changed |= self.view.apply_all(items)

    def settle(self, now: float) -> None:
        """Take everything applied so far as the baseline (the registration scan's picture)."""
        self.scanning = False
        self._samples.clear()
        self._rates.clear()
        self._items_rate = self._span = 0.0
        self._baseline(now)

    def _baseline(self, now: float) -> None:
        self._seen = {key: (state, state.activity) for key, state in self.view.files.items()}
        self._changed.clear()
        self._items_seen = self.view.items
        self._since = now

    def tick(self, now: float) -> None:
        """Close the sample of activity since the last tick and recompute the rates."""
        if self._since is None:
            self._baseline(now)
            return
        deltas = {}
        for key in self._changed:
            state = self.view.files.get(key)
            if state is None:
                continue
            before = self._seen.get(key)
            if before is None or before[0] is not state:  # new, or its inode was reused
                if before is not None:
                    self._paths.pop(before[0].uuid, None)
                base = Activity()
            else:
                base = before[1]
            deltas[key] = state.activity - base
            self._seen[key] = (state, state.activity)
        self._changed.clear()
        self._samples.append(_Sample(self._since, now, deltas, self.view.items - self._items_seen))
        self._items_seen = self.view.items
        self._since = now
        while self._samples and self._samples[0].end <= now - self.window:
            self._samples.popleft()
        self._recompute(now)
        self._forget_idle()

    def _recompute(self, now: float) -> None:
        self._rates.clear()
        self._span = now - self._samples[0].start if self._samples else 0.0
        if self._span <= 0:
            self._items_rate = 0.0
            return
        moved: dict[_Key, Activity] = {}
        for sample in self._samples:
            for key, delta in sample.deltas.items():
                moved[key] = moved.get(key, Activity()) + delta
        self._rates = {
            key: (total.added / self._span, total.removed / self._span)
            for key, total in moved.items()
            if total.added or total.removed
        }
        self._items_rate = sum(sample.items for sample in self._samples) / self._span

    def _forget_idle(self) -> None:
        for key, state in list(self.view.files.items()):
            if not state.cached and not state.dirty and key not in self._rates:
                del self.view.files[key]
                self._seen.pop(key, None)
                self._probes.pop(key, None)
                self._paths.pop(state.uuid, None)

    def rate(self, uuid: Uuid) -> tuple[float, float]:
        """Pages added and removed per second for one file, over the window."""
        return self._rates.get((uuid.dev, uuid.ino), (0.0, 0.0))

    def most_cached(self) -> list[FileResidency]:
        """The files with the most cached pages (``rows`` at most), most first."""
        files = [state for state in self.view if state.cached]
        files.sort(key=lambda s: (-s.cached, s.uuid.dev, s.uuid.ino))
        return files[: self.rows]

    def fastest(self) -> list[FileResidency]:
        """The files with the most pages moved per second (``rows`` at most), fastest first."""
        files = [self.view.files[key] for key in self._rates if key in self.view.files]
        files.sort(key=lambda s: (-sum(self.rate(s.uuid)), s.uuid.dev, s.uuid.ino))
        return files[: self.rows]

    def name(self, uuid: Uuid) -> str:
        """How a file is shown: relative to the root, or ``<dev N ino M>`` if unknown."""
        path = self._paths.get(uuid)
        if path is None:
            return f"<dev {uuid.dev} ino {uuid.ino}>"
        relative = os.path.relpath(path, self.root)
        return path if relative.startswith("..") else relative

    async def refresh(
        self,
        now: float,
        get_path: Callable[[Uuid], Awaitable[str]],
        probe: Callable[[Sequence[tuple[Uuid, str]]], list[Probe | None]] = probe_files,
    ) -> TopSnapshot:
        """Tick, resolve the paths of the rows to show, probe them, and take a snapshot.

        Args:
            now: The current time, in seconds (any monotonic clock).
            get_path: The task's ``get_path``; asked once per file shown
                (``NotFound``: shown as ``<dev N ino M>``).
            probe: Probes ``(uuid, path)`` pairs (blocking; run in a worker thread).

        Returns:
            The snapshot to render.
        """
        self.tick(now)
        most_cached, fastest = self.most_cached(), self.fastest()
        shown = {(s.uuid.dev, s.uuid.ino): s for s in [*most_cached, *fastest]}
        # Besides the rows: files that are (or were at the last probe) dirty or under
        # writeback, for the totals: writeback follows dirtiness, and no item says when it ends.
        extra = [
            state
            for key, state in self.view.files.items()
            if key not in shown
            and (state.dirty or (key in self._probes and _busy(self._probes[key])))
        ][:_MAX_EXTRA_PROBES]
        for state in shown.values():  # a row without a path is asked again at each refresh
            if self._paths.get(state.uuid) is None:
                await self._resolve(state.uuid, get_path)
        for state in extra:
            if state.uuid not in self._paths:
                await self._resolve(state.uuid, get_path)
        files = [*shown.values(), *extra]
        targets = [(s.uuid, p) for s in files if (p := self._paths.get(s.uuid)) is not None]
        results = await anyio.to_thread.run_sync(probe, targets) if targets else []
        self._probes = {
            (uuid.dev, uuid.ino): result
            for (uuid, _path), result in zip(targets, results, strict=True)
            if result is not None
        }
        return TopSnapshot(
            root=self.root,
            window=self._span,
            scanning=self.scanning,
            totals=self._totals(),
            most_cached=tuple(self._row(s) for s in most_cached),
            fastest=tuple(self._row(s) for s in fastest),
        )

    async def _resolve(self, uuid: Uuid, get_path: Callable[[Uuid], Awaitable[str]]) -> None:
        try:
            self._paths[uuid] = await get_path(uuid)
        except NotFound:
            self._paths[uuid] = None

    def _row(self, state: FileResidency) -> TopRow:
        found = self._probes.get((state.uuid.dev, state.uuid.ino))
        added, removed = self.rate(state.uuid)
        return TopRow(
            name=self.name(state.uuid),
            cached=state.cached,
            size=found.size if found else None,
            dirty=found.dirty if found else state.dirty,
            writeback=found.writeback if found else None,
            added=added,
            removed=removed,
        )

    def _totals(self) -> TopTotals:
        files = self.view.files.values()
        return TopTotals(
            files=len(self.view.files),
            cached_files=sum(1 for state in files if state.cached),
            cached=self.view.cached,
            dirty=self.view.dirty,
            writeback=sum(probe.writeback for probe in self._probes.values()),
            added=sum(added for added, _ in self._rates.values()),
            removed=sum(removed for _, removed in self._rates.values()),
            items=self._items_rate,
            overflows=self.view.overflows,
        )


def _busy(probe: Probe) -> bool:
    return bool(probe.dirty or probe.writeback)


def _pages(pages: int | None) -> str:
    return "?" if pages is None else format_size(pages * _kernel.PAGE_SIZE)


def _rate(per_second: float) -> str:
    return "0" if per_second == 0 else f"{per_second:.1f}"


def _table(title: str, rows: Sequence[TopRow]) -> Table:
    table = Table(title=title, title_justify="left", expand=True, header_style="bold")
    table.add_column("file", ratio=1, overflow="fold")
    for header in ("cached", "%", "dirty", "writeback", "added pg/s", "removed pg/s"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        size_pages = -(-row.size // _kernel.PAGE_SIZE) if row.size is not None else 0
        share = f"{100 * row.cached / size_pages:.0f}%" if size_pages else "?"
        table.add_row(
            row.name,
            _pages(row.cached),
            share,
            _pages(row.dirty),
            _pages(row.writeback),
            _rate(row.added),
            _rate(row.removed),
        )
    if not rows:
        table.add_row(Text("(none)", style="dim"), "", "", "", "", "", "")
    return table


def render(snapshot: TopSnapshot, footer: str | None = None) -> RenderableType:
    """The snapshot as a header, the totals, and the two tables ("most cached" first).

    Args:
        snapshot: What to show.
        footer: A last line, such as how to quit.
    """
    totals = snapshot.totals
    rates = (
        f"rates over the last {snapshot.window:.1f} s"
        if snapshot.window
        else "no rates yet: they need two refreshes"
    )
    header = Text.assemble(
        ("aioduet top ", "bold"),
        snapshot.root,
        f"  ({rates}{'; scanning the tree' if snapshot.scanning else ''})",
    )
    summary = Text(
        f"files {totals.files} ({totals.cached_files} cached)"
        f"  cached {_pages(totals.cached)}  dirty {_pages(totals.dirty)}"
        f"  writeback {_pages(totals.writeback)}"
        f"  pages +{_rate(totals.added)}/s -{_rate(totals.removed)}/s"
        f"  items {_rate(totals.items)}/s  overflows {totals.overflows}"
    )
    parts: list[RenderableType] = [
        header,
        summary,
        _table("most cached", snapshot.most_cached),
        _table("changing fastest", snapshot.fastest),
    ]
    if footer:
        parts.append(Text(footer, style="dim"))
    return Group(*parts)
