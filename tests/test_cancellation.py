"""Cancelling a task's iteration, the framework, or a client process never hurts the other tasks.

Three levels, each driven by hypothesis-chosen cancellation points:

* **Scripted framework** (no kernel, many examples): an embedded framework whose only source is
  a script. A hypothesis program interleaves observations with registrations, fetches,
  ``async for`` loops, ``bmap`` and closes, and cancels them at chosen points: a register
  awaited in a cancelled scope, an iteration cancelled after ``k`` items or while it waits
  (woken by a fresh observation or not), a waiting fetch cancelled, a close in a cancelled
  scope, a task closed with items buffered, and the whole framework cancelled with a
  consumer iterating outside it. After every step the store passes
  :func:`storecheck.check_store` for exactly the tasks the program holds, ``status()`` lists
  exactly them, and the source was asked to watch exactly their scopes. At checkpoints and at
  the end every task (cancelled ones included) has lost nothing: a state-based task's items,
  applied to its view, equal the scripted truth; an event-based task got, per page, exactly
  the events since its registration scan; OVERFLOW came once per signal at most, at least
  once after one; a done file gave nothing after ``Bmap.SET``.
* **Real framework** (kernel, ext4, ``scan`` and ``exact``): two tasks on a small tree; the
  victim's iteration is cancelled (after ``k`` items, or while waiting), or it is closed
  mid-batch, or its registration is cancelled; the survivor (and the victim, when still
  registered) then converges with cachestat after reads of known files. The whole framework
  is cancelled at a chosen stage (while entering, right after registering, after ``n``
  items): it exits with nothing but the cancellation, leaking no fd, thread or tracefs
  instance.
* **Process** (``aioduet daemon``): a second client process is SIGKILLed at a chosen point
  (after ``n`` items, while registering, while a fetch waits); the first client's task keeps
  converging and the daemon's ``status()`` drops the killed client's task.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import pytest
from anyio.streams.text import TextReceiveStream
from clirun import daemon_process
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pagecache import evict, read_pages, uuid_of, write_clean
from storecheck import check_store
from taskitems import apply_exists, converge

import aioduet
import aioduet.abc
from aioduet import Bmap, Event, Item, Uuid
from aioduet.daemon import serve
from aioduet.store import Key, Observation

ADDED, REMOVED, DIRTY, FLUSHED = (int(e) for e in Event if e in Event(0xF))
SECONDS = 10

# -- the scripted level ---------------------------------------------------------------------

DEV = 0xFE01  # no real filesystem: the keys name inodes that only the index knows
#: The scripted files: (key, path below the tree). Tasks register for the tree or for ``a``.
FILES: list[tuple[Key, str]] = [
    ((DEV, 100, 1), "a/f0"),
    ((DEV, 101, 0), "a/f1"),
    ((DEV, 102, 7), "b/f2"),
    ((DEV, 103, 0), "f3"),
]
ROOTS = ["", "a"]
MASKS = [
    Event.EXISTS,
    Event.MODIFIED,
    Event.EXISTS | Event.MODIFIED,
    Event.ADDED | Event.REMOVED,
    Event.ADDED,
    Event.DIRTY | Event.FLUSHED,
    Event.EXISTS | Event.DIRTY,
]
PAIRS = ((ADDED, REMOVED, Event.EXISTS), (DIRTY, FLUSHED, Event.MODIFIED))


@attrs.define
class World:
    """The scripted truth: which pages of each file are cached and dirty, and what happened."""

    on: dict[int, dict[Key, set[int]]] = attrs.field(
        factory=lambda: {ADDED: {}, DIRTY: {}}  # cached pages, dirty pages
    )
    log: list[tuple[Key, int, int]] = attrs.field(factory=list)
    """Every page event in order: ``(key, page, event bit)``."""

    def change(self, key: Key, first: int, count: int, event: int) -> list[Observation]:
        """Observations for the pages of the run that the event really changes."""
        low = event if event in (ADDED, DIRTY) else event >> 1
        pages = self.on[low].setdefault(key, set())
        changed = [p for p in range(first, first + count) if (p in pages) != (event == low)]
        for page in changed:
            if event == low:
                pages.add(page)
            else:
                pages.discard(page)
            self.log.append((key, page, event))
        return _runs(key, changed, event)

    def present(self) -> list[Observation]:
        """The current state, as a registration scan reports it (ADDED, DIRTY)."""
        return [
            obs
            for low, files in self.on.items()
            for key, pages in files.items()
            for obs in _runs(key, sorted(pages), low)
        ]


def _runs(key: Key, pages: list[int], event: int) -> list[Observation]:
    runs: list[Observation] = []
    for page in pages:
        if runs and runs[-1][1] + runs[-1][2] == page:
            runs[-1] = (key, runs[-1][1], runs[-1][2] + 1, event)
        else:
            runs.append((key, page, 1, event))
    return runs


@attrs.define(eq=False)
class Watcher:
    """A task the program holds, and everything it was ever handed."""

    task: aioduet.Task
    root: str
    items: list[Item] = attrs.field(factory=list)
    overflows_signalled: int = 0
    done: dict[Key, int] = attrs.field(factory=dict)
    """Files marked done, with how many items the task had been handed by then."""


@attrs.define(eq=False)
class ScriptedSource:
    """A source that reports what the program tells it, and counts its scopes."""

    world: World
    scopes: Counter[str] = attrs.field(factory=Counter)
    introduced: dict[int, tuple[int, list[Observation]]] = attrs.field(factory=dict)
    """Task id -> the length of the world's log when its registration scan reported the
    state, and that state."""
    name: str = "scripted"

    def add_scope(self, root: str) -> None:
        self.scopes[root] += 1

    def remove_scope(self, root: str) -> None:
        assert self.scopes[root] > 0, f"{root} removed more often than added"
        self.scopes[root] -= 1
        if not self.scopes[root]:
            del self.scopes[root]

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        await anyio.sleep_forever()

    async def introduce(self, root: str, intro: Any) -> None:
        # Synchronous, as a scan batch that looks, covers and delivers in one go.
        intro.looking()
        intro.cover([key[:2] for key, _path in FILES])
        state = self.world.present()
        intro.deliver(state)
        self.introduced[intro.task.id] = (len(self.world.log), state)

    def status(self) -> aioduet.SourceStatus:
        return aioduet.SourceStatus(name=self.name, active=True, observations=0)


def _under(path: str, root: str) -> bool:
    return root == "" or path.startswith(root + "/")


def verify(watcher: Watcher, world: World, source: ScriptedSource) -> None:  # noqa: PLR0912 - per pair
    """Assert that a task, cancelled or not, was handed exactly what its mask promises."""
    mask = watcher.task.mask
    relevant = {key for key, path in FILES if _under(path, watcher.root)}
    want = 0
    for low, high, state_based in PAIRS:
        if mask & state_based:
            want |= low | high
    want |= int(mask) & 0xF
    overflows = 0
    for position, item in enumerate(watcher.items):
        if item.state == Event.OVERFLOW:
            overflows += 1
            continue
        key = item.uuid.key
        assert key in relevant, f"{item} is outside {watcher.root or 'the tree'}"
        assert not item.state & ~want, f"{item}: bits the mask {mask!r} does not want"
        assert position < watcher.done.get(key, len(watcher.items)), f"{item} after Bmap.SET"
    if watcher.overflows_signalled:
        assert 1 <= overflows <= watcher.overflows_signalled
    else:
        assert overflows == 0
    if watcher.task.id not in source.introduced:  # closed before its registration scan
        assert not [item for item in watcher.items if item.state != Event.OVERFLOW]
        return
    intro_at, intro_state = source.introduced[watcher.task.id]
    keys = relevant - set(watcher.done)
    for low, high, state_based in PAIRS:
        if mask & state_based:
            view: dict[Key, set[int]] = {}
            for item in watcher.items:
                if item.uuid.key in keys and item.state & (low | high):
                    assert item.state & (low | high) != low | high, f"{item}: not a net change"
                    pages = view.setdefault(item.uuid.key, set())
                    if item.state & low:
                        pages.update(item.pages)
                    else:
                        pages.difference_update(item.pages)
            truth = world.on[low]
            got = {k: p for k, p in view.items() if p}
            assert got == {k: p for k, p in truth.items() if p and k in keys}, "a lost change"
        elif want & (low | high):
            seen: Counter[tuple[Key, int]] = Counter()
            for item in watcher.items:
                if item.uuid.key in keys and item.state & (low | high):
                    for page in item.pages:
                        seen[item.uuid.key, page] |= int(item.state) & (low | high)
            expected: Counter[tuple[Key, int]] = Counter()
            for key, first, count, event in intro_state:
                for page in range(first, first + count):
                    if key in keys and event & want & (low | high):
                        expected[key, page] |= event
            for key, page, event in world.log[intro_at:]:
                if key in keys and event & want & (low | high):
                    expected[key, page] |= event
            assert dict(seen) == dict(expected), "events lost or invented"


# Steps of a program; "who" picks a held task (modulo their number).
_obs = st.tuples(
    st.integers(0, len(FILES) - 1),
    st.integers(0, 2) | st.integers(0, 12),
    st.integers(1, 4),
    st.sampled_from([ADDED, REMOVED, DIRTY, FLUSHED]),
)
# None: cancel once everything waits; n: cancel after n turns of the event loop.
_spins = st.none() | st.integers(0, 3)
STEP = st.one_of(
    st.tuples(st.just("obs"), _obs),
    st.tuples(st.just("register"), st.sampled_from(MASKS), st.sampled_from(ROOTS), st.booleans()),
    st.tuples(
        st.just("close"), st.integers(0, 7), st.sampled_from(["plain", "cancelled", "iterating"])
    ),
    st.tuples(st.just("iterate"), st.integers(0, 7), st.integers(0, 5), st.none() | _obs, _spins),
    st.tuples(
        st.just("fetch"),
        st.integers(0, 7),
        st.integers(1, 3),
        st.sampled_from(["nowait", "poll", "cancelled", "waiting"]),
        st.none() | _obs,
        _spins,
    ),
    st.tuples(st.just("done"), st.integers(0, 7), st.integers(0, len(FILES) - 1)),
    st.tuples(st.just("overflow")),
    st.tuples(st.just("settle")),
)


@attrs.define(eq=False)
class Program:
    """Runs a program against an embedded framework over the scripted source."""

    tree: Path
    world: World = attrs.field(factory=World)
    held: list[Watcher] = attrs.field(factory=list)
    everyone: dict[int, Watcher] = attrs.field(factory=dict)
    source: ScriptedSource = attrs.field(init=False)
    duet: aioduet.Duet | None = None

    def __attrs_post_init__(self) -> None:
        self.source = ScriptedSource(self.world)

    @property
    def framework(self) -> aioduet.Duet:
        assert self.duet is not None
        return self.duet

    def observe(self, obs: tuple[int, int, int, int]) -> None:
        index, first, count, event = obs
        observations = self.world.change(FILES[index][0], first, count, event)
        if observations:
            self.framework.store.ingest(observations)

    async def check(self) -> None:
        duet = self.framework
        check_store(duet.store, {w.task._slot: w.task.mask for w in self.held})
        assert sorted(duet._tasks) == sorted(w.task._slot for w in self.held)
        status = await duet.status()
        assert [t.id for t in status.tasks] == sorted(w.task.id for w in self.held)
        assert self.source.scopes == Counter(str(self.tree / w.root) for w in self.held)

    def pick(self, who: int) -> Watcher | None:
        return self.held[who % len(self.held)] if self.held else None

    async def settle(self) -> None:
        with anyio.fail_after(SECONDS):
            for watcher in self.held:
                await watcher.task.wait_scanned()
        for watcher in self.held:
            while items := watcher.task.fetch_nowait(3):
                watcher.items += items
            verify(watcher, self.world, self.source)

    async def register(self, mask: Event, root: str, cancelled: bool) -> None:
        duet = self.framework
        with anyio.CancelScope() as scope:
            if cancelled:
                scope.cancel()
            task = await duet.register(f"t{len(self.everyone)}", mask, self.tree / root)
            watcher = Watcher(task, root)
            self.everyone[task.id] = watcher
            self.held.append(watcher)

    async def consume(
        self,
        watcher: Watcher,
        body: Callable[[anyio.CancelScope], Any],
        wake: tuple[int, int, int, int] | None = None,
        spins: int | None = None,
        *,
        close: bool = False,
    ) -> None:
        """Run ``body`` in a task and cancel it at a chosen point.

        With ``spins`` None, the body runs until everything blocks (a waiting fetch) before
        ``wake`` is observed; otherwise the wake comes at once and the body gets ``spins``
        turns of the loop: the cancellation then lands wherever it has got to.
        """
        scope = anyio.CancelScope()
        ended = anyio.Event()

        async def run() -> None:
            with scope:
                await body(scope)
            ended.set()

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            if spins is None:
                await anyio.wait_all_tasks_blocked()
            if wake is not None:
                self.observe(wake)
            for _ in range(spins or 0):
                await anyio.lowlevel.checkpoint()
            if close:
                await anyio.wait_all_tasks_blocked()
                await watcher.task.aclose()
                with anyio.fail_after(SECONDS):
                    await ended.wait()  # the iteration ended by itself
                assert not scope.cancel_called
            scope.cancel()

    async def step(self, kind: str, *args: Any) -> None:  # noqa: PLR0912 - one per step kind
        if kind == "obs":
            self.observe(args[0])
            return
        if kind == "register":
            await self.register(*args)
            return
        if kind == "overflow":
            duet = self.framework
            duet.store.signal_overflow(duet.store.active_slots)
            for held in self.held:
                held.overflows_signalled += 1
            return
        if kind == "settle":
            await self.settle()
            return
        watcher = self.pick(args[0])
        if watcher is None:
            return
        task = watcher.task
        if kind == "close":
            self.held.remove(watcher)
            if args[1] == "iterating":

                async def iterate(scope: anyio.CancelScope) -> None:
                    watcher.items.extend([item async for item in task])

                await self.consume(watcher, iterate, None, close=True)
            else:
                with anyio.CancelScope() as scope:
                    if args[1] == "cancelled":
                        scope.cancel()
                    await task.aclose()
            assert task.closed
        elif kind == "iterate":
            k = args[1]

            async def iterate_k(scope: anyio.CancelScope) -> None:
                count = 0
                async for item in task:
                    watcher.items.append(item)
                    count += 1
                    if count >= k:
                        scope.cancel()  # the next __anext__ raises, taking nothing

            await self.consume(watcher, iterate_k, args[2], args[3])
        elif kind == "fetch":
            count, mode, wake, spins = args[1:]
            if mode == "nowait":
                watcher.items += task.fetch_nowait(count)
            elif mode == "poll":
                watcher.items += await task.poll(count)
            elif mode == "cancelled":
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    watcher.items += await task.fetch(count)
            else:

                async def fetch(scope: anyio.CancelScope) -> None:
                    watcher.items.extend(await task.fetch(count))

                await self.consume(watcher, fetch, wake, spins)
        elif kind == "done":
            key = FILES[args[1]][0]
            watcher.done.setdefault(key, len(watcher.items))
            await task.bmap(Bmap.SET, Uuid.from_key(key))

    async def run(self, steps: list[tuple[Any, ...]], stop_at: int | None) -> None:
        outside: list[tuple[Watcher, list[Item]]] = []
        with anyio.fail_after(SECONDS * 3):
            async with anyio.create_task_group() as group:
                with anyio.CancelScope() as framework_scope:
                    async with aioduet.open_duet("scan") as duet:
                        self.duet = duet
                        await self.check()
                        for position, (kind, *args) in enumerate(steps):
                            if position == stop_at:
                                self.iterate_outside(group, outside)
                                await anyio.wait_all_tasks_blocked()
                                framework_scope.cancel()
                                await anyio.lowlevel.checkpoint()
                                raise AssertionError("the cancelled framework went on")
                            await self.step(kind, *args)
                            await self.check()
                        await self.settle()
                        for watcher in list(self.held):
                            await watcher.task.aclose()
                            self.held.remove(watcher)
                            await self.check()
                        assert duet.store.statistics().files == 0
                        return
            # The framework was cancelled: iterations outside it ended, what was left drains.
            for watcher, got in outside:
                watcher.items += got
            for watcher in self.held:
                assert watcher.task.closed
                with pytest.raises((anyio.EndOfStream, anyio.ClosedResourceError)):
                    while True:
                        watcher.items += watcher.task.fetch_nowait(2)
                verify(watcher, self.world, self.source)

    def iterate_outside(
        self, group: anyio.abc.TaskGroup, outside: list[tuple[Watcher, list[Item]]]
    ) -> None:
        """Iterate every held task in ``group``: the framework's close must end them."""
        for watcher in self.held:
            got: list[Item] = []
            outside.append((watcher, got))

            async def iterate(task: aioduet.Task = watcher.task, got: list[Item] = got) -> None:
                async for item in task:
                    got.append(item)

            group.start_soon(iterate)


@pytest.fixture(scope="module")
def scripted_tree() -> Iterator[Path]:
    """Directories the scripted tasks register for (their files exist only in the index)."""
    path = Path(tempfile.mkdtemp(prefix="aioduet-cancel-", dir="/tmp"))
    (path / "a").mkdir()
    (path / "b").mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_scripted(
    tree: Path, backend: str, steps: list[tuple[Any, ...]], stop_at: int | None
) -> None:
    program = Program(tree)

    async def main() -> None:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("aioduet._framework.make_sources", lambda *args: [program.source])
            original = aioduet.Duet.__aenter__

            async def enter(duet: aioduet.Duet) -> aioduet.Duet:
                entered = await original(duet)
                for key, path in FILES:
                    duet.index.add(key[0], key[1], str(tree / path))
                return entered

            patch.setattr(aioduet.Duet, "__aenter__", enter)
            await program.run([("register", Event.EXISTS, "", False), *steps], stop_at)

    anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, max_size=25), stop=st.none() | st.integers(0, 25))
@example(  # a register awaited in a cancelled scope must not leave a task nobody holds
    steps=[("register", Event.ADDED, "a", True)], stop=None
)
@example(  # an iteration cancelled just after __anext__ took an item from the store
    steps=[("obs", (0, 0, 3, ADDED)), ("iterate", 0, 5, None, 1)], stop=None
)
@example(  # a fetch woken by an observation and cancelled as it takes the items
    steps=[("fetch", 0, 2, "waiting", (1, 0, 2, ADDED), 1), ("obs", (1, 1, 1, REMOVED))], stop=3
)
def test_scripted_cancellations_leave_the_store_consistent(
    scripted_tree: Path, backend: str, steps: list[tuple[Any, ...]], stop: int | None
) -> None:
    run_scripted(scripted_tree, backend, steps, stop)


# -- the real framework -----------------------------------------------------------------------

KERNEL_FILES = 6
KERNEL_PAGES = 8
INSTANCES = Path("/sys/kernel/tracing/instances")


@pytest.fixture(scope="module")
def kernel_tree() -> Iterator[list[Path]]:
    """A small tree of files on ext4, written once; each example starts by evicting them."""
    path = Path(tempfile.mkdtemp(prefix="aioduet-cancel-", dir="/tmp"))
    try:
        yield [write_clean(path / f"d{i % 2}" / f"f{i}", KERNEL_PAGES) for i in range(KERNEL_FILES)]
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _threads() -> int:
    """Threads of this process, anyio's idle worker threads aside (they time out by themselves)."""
    return sum(1 for t in threading.enumerate() if not t.name.startswith("AnyIO worker"))


def _instances() -> set[str]:
    return {p.name for p in INSTANCES.iterdir()} if INSTANCES.is_dir() else set()


async def _consume_victim(
    victim: aioduet.Task, view: dict[Uuid, set[int]], read: list[Path], how: str, k: int
) -> None:
    """Iterate the victim and stop it as ``how`` says, after ``k`` items or all it can get."""
    wanted = {uuid_of(path): set(range(KERNEL_PAGES)) for path in read}
    taken: list[Item] = []
    with anyio.fail_after(SECONDS), anyio.CancelScope() as scope:
        async for item in victim:
            taken.append(item)
            apply_exists(view, [item])
            enough = len(taken) >= k or all(view.get(u, set()) >= p for u, p in wanted.items())
            if not enough:
                continue
            if how == "aclose_mid_batch":
                await victim.aclose()  # the iteration ends; the rest of its batch is dropped
            elif how == "cancel_after_k":
                scope.cancel()  # the next __anext__ raises, taking nothing
            elif not victim.statistics().buffered_items:
                with anyio.move_on_after(0.2):  # cancel_waiting: the expiry cancels the wait
                    apply_exists(view, await victim.fetch())
                scope.cancel()


VICTIM = ["cancel_after_k", "cancel_waiting", "aclose_mid_batch", "cancel_register"]


async def _victim_scenario(files: list[Path], sources: str, how: str, k: int) -> None:
    for path in files:
        evict(path)
    root = files[0].parent.parent
    async with aioduet.open_duet(sources, interval=0.05) as duet:
        survivor = await duet.register("survivor", Event.EXISTS, root)
        victim: aioduet.Task | None = None
        with anyio.CancelScope() as scope:
            if how == "cancel_register":
                scope.cancel()
            victim = await duet.register("victim", Event.EXISTS, root)
        if how == "cancel_register":
            assert [t.name for t in (await duet.status()).tasks] == ["survivor"]
            victim = None
        with anyio.fail_after(SECONDS):
            await survivor.wait_scanned()
            if victim is not None:
                await victim.wait_scanned()
        for path in files[:3]:
            read_pages(path)
        survivor_view: dict[Uuid, set[int]] = {}
        victim_view: dict[Uuid, set[int]] = {}
        if victim is not None:
            await _consume_victim(victim, victim_view, files[:3], how, k)
        for path in files[3:]:
            read_pages(path)
        await converge(survivor, survivor_view, files)
        names = [t.name for t in (await duet.status()).tasks]
        if how in ("aclose_mid_batch", "cancel_register"):
            assert names == ["survivor"]
        else:  # a cancelled iteration leaves the task registered, and it lost nothing
            assert names == ["survivor", "victim"]
            assert victim is not None
            await converge(victim, victim_view, files)
        await survivor.aclose()
        if victim is not None:
            await victim.aclose()
        assert (await duet.status()).store.files == 0


@pytest.mark.kernel
@pytest.mark.parametrize("sources", ["scan", "exact"])
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(how=st.sampled_from(VICTIM), k=st.integers(1, 12))
def test_a_cancelled_or_closed_task_leaves_the_other_converging(
    kernel_tree: list[Path], sources: str, how: str, k: int
) -> None:
    anyio.run(_victim_scenario, kernel_tree, sources, how, k)


STAGES = ["entering", "registered", "items"]


async def _cancel_framework(files: list[Path], sources: str, stage: str, n: int) -> None:
    for path in files:
        evict(path)
    root = files[0].parent.parent
    fds, threads, instances = len(os.listdir("/proc/self/fd")), _threads(), _instances()
    taken: list[Item] = []
    with anyio.fail_after(SECONDS * 2):
        with anyio.CancelScope() as scope:
            if stage == "entering":
                scope.cancel()
            async with aioduet.open_duet(sources, interval=0.05) as duet:
                tasks = [await duet.register(f"t{i}", Event.EXISTS, root) for i in range(2)]
                if stage == "registered":
                    scope.cancel()  # registration scans are under way
                for path in files:
                    read_pages(path)
                view: dict[Uuid, set[int]] = {}
                everything = {uuid_of(path): set(range(KERNEL_PAGES)) for path in files}
                async for item in tasks[n % 2]:
                    taken.append(item)
                    apply_exists(view, [item])
                    if len(taken) >= n or all(
                        view.get(u, set()) >= p for u, p in everything.items()
                    ):
                        scope.cancel()
            raise AssertionError("the cancelled framework went on")
        assert scope.cancelled_caught
    assert len(os.listdir("/proc/self/fd")) == fds, "an fd leaked"
    assert _threads() == threads, "a thread leaked"
    assert _instances() == instances, "a tracefs instance was left behind"


@pytest.mark.kernel
@pytest.mark.parametrize("sources", ["scan", "exact"])
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(stage=st.sampled_from(STAGES), n=st.integers(1, 8))
def test_cancelling_the_framework_exits_cleanly(
    kernel_tree: list[Path], sources: str, stage: str, n: int
) -> None:
    anyio.run(_cancel_framework, kernel_tree, sources, stage, n)


# -- processes ------------------------------------------------------------------------------

#: The second client: registers, then says where it is, one line per point, until killed.
CLIENT = """
import sys, anyio, aioduet
async def main(socket, root):
    async with aioduet.connect(socket) as duet:
        print("registering", flush=True)
        task = await duet.register("doomed", aioduet.Event.EXISTS, root)
        print("registered", flush=True)
        await task.wait_scanned()
        while True:
            print("fetching", flush=True)
            for item in await task.fetch():
                print("item", flush=True)
anyio.run(main, *sys.argv[1:])
"""
KILL_AT = ["registering", "registered", "fetching", "item"]


@pytest.fixture(scope="module")
def daemon_socket() -> Iterator[Path]:
    """A daemon (scan sources) for the module's process tests, killed afterwards."""
    where = Path(tempfile.mkdtemp(prefix="aioduet-cancel-sock-", dir="/tmp"))
    try:
        with daemon_process(where / "d.sock"):
            yield where / "d.sock"
    finally:
        shutil.rmtree(where, ignore_errors=True)


async def _kill_a_client(socket: Path, files: list[Path], point: str, n: int) -> None:
    for path in files:
        evict(path)
    root = files[0].parent.parent
    async with (
        aioduet.connect(socket) as duet,
        duet.register("keeper", Event.EXISTS, root) as keeper,
    ):
        with anyio.fail_after(SECONDS):
            await keeper.wait_scanned()
        view: dict[Uuid, set[int]] = {}
        child = await anyio.open_process(
            [sys.executable, "-c", CLIENT, str(socket), str(root)], stderr=None
        )
        try:
            assert child.stdout is not None
            lines = TextReceiveStream(child.stdout)
            seen: Counter[str] = Counter()
            buffer = ""
            with anyio.fail_after(SECONDS):
                while seen[point] < (n if point in ("item", "fetching") else 1):
                    buffer += await lines.receive()
                    *done, buffer = buffer.split("\n")
                    for line in done:
                        seen[line] += 1
                        if line == "fetching" and seen["fetching"] <= 3:
                            # Items for both clients: every fetch has something to return.
                            read_pages(files[seen["fetching"] - 1])
        finally:
            child.kill()
            with anyio.CancelScope(shield=True):
                await child.aclose()
        for path in files[3:]:
            read_pages(path)
        await converge(keeper, view, files)
        with anyio.fail_after(SECONDS):
            # The daemon notices the hang-up by itself: ask until it has (no sleeping).
            while [t.name for t in (await duet.status()).tasks] != ["keeper"]:
                await anyio.lowlevel.checkpoint()
        await converge(keeper, view, files)


@pytest.mark.kernel
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(point=st.sampled_from(KILL_AT), n=st.integers(1, 3))
def test_a_killed_client_process_leaves_the_daemon_serving_the_others(
    daemon_socket: Path, kernel_tree: list[Path], point: str, n: int
) -> None:
    anyio.run(_kill_a_client, daemon_socket, kernel_tree, point, n)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_register_cancelled_as_the_daemon_answers_leaves_no_task(
    scripted_tree: Path,
) -> None:
    """The answer is read and the task adopted, then the caller is cancelled before resuming."""
    async with (
        aioduet.open_duet("scan") as embedded,
        serve(embedded, str(scripted_tree / "sock")),
        aioduet.connect(scripted_tree / "sock") as client,
    ):
        scope = anyio.CancelScope()

        class Adopting(dict[int, Any]):
            def __setitem__(self, key: int, value: Any) -> None:
                super().__setitem__(key, value)
                scope.cancel()  # cancelled the moment the answer is adopted

        client._tasks = Adopting()
        with scope:
            await client.register("orphan", Event.EXISTS, scripted_tree)
        assert scope.cancelled_caught
        with anyio.fail_after(SECONDS):
            while (await client.status()).tasks:
                await anyio.lowlevel.checkpoint()
        assert not client._tasks
        assert (await embedded.status()).store.files == 0
