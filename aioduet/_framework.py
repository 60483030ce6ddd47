"""The embedded framework: ``open_duet()`` wires sources, store and tasks together."""

from __future__ import annotations

import errno
import itertools
import logging
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AsyncExitStack

import anyio
import anyio.abc
import attrs

from . import _kernel
from . import abc as _abc
from ._handles import HandleResolver, generation_at
from ._model import Event, Uuid
from ._paths import Exclusions, PathHint, PathHints, PathIndex, is_under, normalize_root
from ._status import SourceStatus, Status, TaskStatus
from .errors import SourceUnavailable, TooManyTasks
from .sources import (
    DEFAULT_BUDGET,
    MIN_BUDGET,
    Sink,
    Source,
    SourceOptions,
    make_sources,
    resolve_sources,
)
from .store import Key, Observation, Store
from .tasks import Registration, Task
from .tasks._task import TaskHost

__all__ = ["Duet", "checked_directory", "open_duet", "validate_mask"]

DEFAULT_MAX_TASKS = 8
_RESTART_DELAY = 0.5
_RECHECKS = 8
"""Looks at a file that keeps changing while a registration scan covers it, at most."""
_RESTART_DELAY_MAX = 30.0
logger = logging.getLogger("aioduet")
# A plain int: ~ on an IntFlag complements only within the flag's own bits.
_REGISTRABLE = int(
    Event.ADDED | Event.REMOVED | Event.DIRTY | Event.FLUSHED | Event.MODIFIED | Event.EXISTS
)


def validate_mask(mask: int) -> Event:
    """Check a registration mask as Duet's ``duet_init`` did, with clear messages.

    Raises:
        TypeError: ``mask`` is not an int.
        ValueError: it is 0, has unknown bits or OVERFLOW, or mixes a state-based event with
            the event-based ones it stands for.
    """
    if isinstance(mask, bool) or not isinstance(mask, int):
        raise TypeError(f"mask must be an aioduet.Event, not {type(mask).__name__}")
    if mask & Event.OVERFLOW:
        raise ValueError("OVERFLOW is delivered to tasks, never registered for")
    if mask & ~_REGISTRABLE:
        raise ValueError(f"mask {mask:#x} has bits that are no aioduet.Event")
    event = Event(mask)
    if not event:
        raise ValueError("mask is empty: register for at least one event")
    if event & Event.EXISTS and event & (Event.ADDED | Event.REMOVED):
        raise ValueError("EXISTS already covers ADDED and REMOVED: do not combine them")
    if event & Event.MODIFIED and event & (Event.DIRTY | Event.FLUSHED):
        raise ValueError("MODIFIED already covers DIRTY and FLUSHED: do not combine them")
    return event


def checked_directory(path: str | os.PathLike[str]) -> str:
    """``path`` as a registered root (absolute, symlinks resolved), checked to be a directory."""
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"path must be a str or os.PathLike[str], not {type(raw).__name__}")
    if not os.path.isabs(raw):
        raise ValueError(f"path must be absolute, not {raw!r}")
    root = normalize_root(raw)
    if not os.path.exists(root):
        raise FileNotFoundError(errno.ENOENT, "no such directory", raw)
    if not os.path.isdir(root):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", raw)
    return root


def _directory_uuid(root: str) -> Uuid:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return Uuid.from_stat(os.fstat(fd), _kernel.inode_generation(fd))
    finally:
        os.close(fd)


@attrs.define(eq=False)
class Duet(_abc.Duet):
    """An embedded aioduet framework; make one with :func:`open_duet`."""

    max_tasks: int
    """The most tasks that can be registered at once."""
    _source_names: tuple[str, ...] = attrs.field(alias="source_names")
    _options: SourceOptions = attrs.field(alias="options")
    store: Store = attrs.field(init=False)
    index: PathIndex = attrs.field(init=False, factory=PathIndex)
    _sink: Sink = attrs.field(init=False)
    _sources: list[Source] = attrs.field(init=False, factory=list)
    _tasks: dict[int, Task] = attrs.field(init=False, factory=dict)
    _intros: dict[int, _Introduction] = attrs.field(init=False, factory=dict)
    _ids: itertools.count[int] = attrs.field(init=False, factory=lambda: itertools.count(1))
    _group: anyio.abc.TaskGroup | None = attrs.field(init=False, default=None)
    _stack: AsyncExitStack | None = attrs.field(init=False, default=None)
    _state: str = attrs.field(init=False, default="new")
    _failures: dict[str, int] = attrs.field(init=False, factory=dict)
    _failure_text: dict[str, str] = attrs.field(init=False, factory=dict)
    _resolvers: dict[tuple[int, int], tuple[HandleResolver, int]] = attrs.field(
        init=False, factory=dict
    )
    """File-handle resolvers by watched directory ``(dev, ino)``, with their registration
    counts (exact set). By directory, not path: a directory made again at a removed one's
    path is another directory."""
    _watched: dict[int, str] = attrs.field(init=False, factory=dict)
    """The path the sources watch for each task's slot: its own path, or, when the task's
    directory is one that another task registered by another path (a bind mount), that
    task's path: sources must not watch one directory twice under two names."""
    _by_inode: dict[tuple[int, int], tuple[str, int]] = attrs.field(init=False, factory=dict)
    """Watched paths by directory ``(dev, ino)``, with the number of tasks on each."""

    def __attrs_post_init__(self) -> None:
        self.store = Store(self.max_tasks, relevance=self._relevance, notify=self._notify)
        self._sink = Sink(self.store, self.index, overflow=self._overflow)
        if "tracepoints" in self._source_names:
            # Events name inodes, not paths: file handles find the paths the index lacks.
            self._sink.attach_resolver(self._resolve_inode)
            self._sink.inode_listeners.append(self._forget_resolution)
            self._sink.path_hints = PathHints()

    def _resolve_inode(self, dev: int, ino: int) -> tuple[str, int] | None:
        """A path under some task's root, and the generation, of an inode; learnt by the index."""
        hints = self._sink.path_hints
        hint = None if hints is None else hints.take(dev, ino)
        if hint is not None and any(
            is_under(hint[0], r.root) for r, _count in self._resolvers.values()
        ):
            found = _confirm(hint, dev, ino)
            if found is not None:
                self.index.add(dev, ino, hint[0], found[1])
                return hint[0], found[0]
        for resolver, _count in self._resolvers.values():
            path = self._learn_path(resolver, dev, ino)
            gen = None if path is None else resolver.generation(dev, ino)
            if gen is not None:
                assert path is not None
                return path, gen
        return None

    def _forget_resolution(self, dev: int, ino: int) -> None:
        """The inode number may name another inode now: what the resolvers cached is stale
        (a negative answer from while the old inode was dying would hide the new one)."""
        for resolver, _count in self._resolvers.values():
            if resolver.dev == dev:
                resolver.invalidate(dev, ino)

    def _learn_path(self, resolver: HandleResolver, dev: int, ino: int) -> str | None:
        """The inode's path under the resolver's root, by file handle, added to the index."""
        if resolver.dev != dev:
            return None
        path = resolver.resolve(dev, ino)
        if path is not None:
            self.index.add(dev, ino, path, 1)
        return path

    def locate(self, dev: int, ino: int) -> None:
        """Look an inode up again by file handle (a task's ``get_path`` found no good path)."""
        self._forget_resolution(dev, ino)
        for resolver, _count in self._resolvers.values():
            self._learn_path(resolver, dev, ino)

    # -- store callbacks -------------------------------------------------------------------

    def _relevance(self, key: Key, slot: int) -> bool | None:
        task = self._tasks.get(slot)
        if task is None:
            return False
        intro = self._intros.get(slot)
        if intro is not None and (key[0], key[1]) not in intro.covered:
            # Its registration scan will introduce the file: undecided till then. What
            # happens to it meanwhile is checked again once the scan covered it.
            intro.missed.add((key[0], key[1]))
            return None
        watched = self._watched[slot]
        answer = self.index.under(key[0], key[1], watched)
        held = self._resolvers.get((task._root.dev, task._root.ino))
        if answer is None and held is not None:
            # An inode no source has a path for (exact set): ask its file handle, and learn
            # the path for get_path.
            answer = held[0].relevant(key[0], key[1], key[2], watched)
            if answer:  # learn the path (for get_path); the generation is not needed here
                self._learn_path(held[0], key[0], key[1])
        exclude = self._options.exclude
        if answer and exclude:
            # The exact source reports inodes wherever they are: drop the excluded ones.
            paths = [p for p in self.index.paths(key[0], key[1]) if is_under(p, watched)]
            answer = not all(exclude.covers(p, watched) for p in paths)
        return answer

    def _overflow(self, root: str | None) -> None:
        """Observations under ``root`` were lost: OVERFLOW to every task whose scope overlaps,
        and each is told its scope's current state again, as at registration.

        Telling the tasks only what changed (the sources' rescan) is not enough: what they
        were told before the loss may be wrong in ways no source can know (the pages of a
        file deleted while its events were lost, a REMOVED that pairs with a later ADDED).
        """
        slots = 0
        for slot, watched in self._watched.items():
            if root is None or is_under(watched, root) or is_under(root, watched):
                slots |= 1 << slot
        if slots:
            self.store.signal_overflow(slots)
            for slot in [s for s in self._watched if slots & (1 << s)]:
                self._reintroduce(slot)

    def _reintroduce(self, slot: int) -> None:
        """Scan the slot's scope for its task again (after lost observations)."""
        if self._group is None or self._state != "open":
            return
        running = self._intros.get(slot)
        if running is not None and running.again is not None:
            running.again = True  # a rescan is under way: one more once it is done
            return
        if running is not None:
            # Its registration scan: what it delivered so far may be wrong too.
            running.scope.cancel()
        self._start_intro(self._tasks[slot], slot, again=False)

    def _start_intro(self, task: Task, slot: int, *, again: bool | None) -> None:
        """Start a registration scan of the task's scope (``again``: None for the first,
        else a rescan after lost observations, and whether another is due after it)."""
        assert self._group is not None
        if again is not None:
            # Pending pages and relevance decisions go: the scan tells the current state,
            # and holds back what happens to a file until it covered it.
            self.store.reset_slot(slot)
        intro = self._intros[slot] = _Introduction(
            self.store, task, slot, self._watched[slot], recheck=self._recheck_later, again=again
        )
        self._group.start_soon(self._introduce, intro)

    def _notify(self, slots: int) -> None:
        for slot, task in self._tasks.items():
            if slots & (1 << slot):
                task._wake()

    # -- lifetime --------------------------------------------------------------------------

    async def __aenter__(self) -> Duet:
        if self._state != "new":
            raise RuntimeError("a framework can be opened only once")
        try:
            supported = _kernel.cachestat_supported()
        except OSError as exc:  # the probe opens a file: EMFILE, ENFILE
            raise SourceUnavailable(
                exc.errno, f"cannot start: {exc.strerror}{_fd_limit_hint(exc.errno)}"
            ) from exc
        if not supported:
            raise SourceUnavailable(
                errno.ENOSYS, "cachestat is unavailable here (Linux >= 6.5 is needed)"
            )
        self._sources = make_sources(self._source_names, self._sink, self._options)
        try:
            async with AsyncExitStack() as stack:
                self._group = await stack.enter_async_context(anyio.create_task_group())
                for source in self._sources:
                    await self._group.start(self._supervise, source)
                self._stack = stack.pop_all()
        except BaseExceptionGroup as group:
            # A source that could not start: raise its own error, not a group of one.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise
        self._state = "open"
        return self

    async def aclose(self) -> None:
        """Close every task (their iterations end) and stop the sources."""
        if self._state != "open":
            return
        self._state = "closed"
        for task in self._tasks.values():
            task._end()
        self._tasks.clear()
        self._intros.clear()
        self._watched.clear()
        self._by_inode.clear()
        for resolver, _count in self._resolvers.values():
            resolver.close()
        self._resolvers.clear()
        assert self._group is not None and self._stack is not None
        self._group.cancel_scope.cancel()
        await self._stack.aclose()

    async def _supervise(self, source: Source, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run a source; if it fails after starting, say so and restart it with backoff.

        A failure while starting propagates (``open_duet()`` raises it). A later one is
        logged, counted in ``status()``, and signalled to every task as OVERFLOW, since
        observations were lost; the restarted source rescans its scopes.
        """
        started = _StartedOnce(task_status)
        delay = _RESTART_DELAY
        while True:
            try:
                await source.run(task_status=started)
            except Exception as exc:
                if not started.done:
                    raise
                self._failed(source, exc, f"failed; restarting in {delay:.1f} s")
                # Its observations were lost: OVERFLOW to every task, and a rescan.
                self._sink.lost(None)
            else:
                return
            await anyio.sleep(delay)
            delay = min(delay * 2, _RESTART_DELAY_MAX)

    def _failed(self, source: Source, exc: Exception, what: str) -> None:
        """Count and log a source's failure; ``status()`` shows it as its last error."""
        leaf: BaseException = exc
        # Sources run task groups: the error that matters is the one inside the group.
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        self._failures[source.name] = self._failures.get(source.name, 0) + 1
        self._failure_text[source.name] = f"{type(leaf).__name__}: {leaf}"
        logger.error("source %r %s", source.name, what, exc_info=exc)

    def _source_status(self, source: Source) -> SourceStatus:
        status = source.status()
        failures = self._failures.get(source.name, 0)
        if not failures:
            return status
        return attrs.evolve(
            status,
            errors=status.errors + failures,
            overflows=status.overflows + failures,
            last_error=self._failure_text[source.name],
        )

    @property
    def source_names(self) -> tuple[str, ...]:
        """The sources this framework runs (what ``sources="auto"`` chose, for example)."""
        return self._source_names

    @property
    def running(self) -> bool:
        """Whether the framework is open."""
        return self._state == "open"

    # -- tasks -----------------------------------------------------------------------------

    def register(self, name: str, mask: int, path: str | os.PathLike[str]) -> Registration:
        """Register a task for the pages of files under ``path``.

        The task is registered by this call, before anything is awaited: await the result,
        or use it with ``async with`` (leaving the block deregisters); either way close it
        when done (:meth:`Task.aclose`), or it stays registered until the framework closes.
        Pages cached under ``path`` at registration are enqueued for the task (ADDED, and
        DIRTY where dirty) in the background; :meth:`Task.wait_scanned` waits for that.

        Args:
            name: a human-readable name, shown by ``status()``.
            mask: the :class:`Event` bits to receive. Not 0, not OVERFLOW, and EXISTS may not
                be combined with ADDED/REMOVED nor MODIFIED with DIRTY/FLUSHED.
            path: an absolute path of a directory.

        Raises:
            TypeError: ``name`` is not a str, or ``mask`` not an int.
            ValueError: an invalid mask or a relative path.
            FileNotFoundError: ``path`` does not exist.
            NotADirectoryError: ``path`` is not a directory.
            TooManyTasks: ``max_tasks`` tasks are registered already.
            anyio.ClosedResourceError: the framework is not open.
        """
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        event = validate_mask(mask)
        root = checked_directory(path)
        if self._state != "open" or self._group is None:
            raise anyio.ClosedResourceError("the framework is not open")
        root_uuid = _directory_uuid(root)
        slot = self.store.add_slot(event)
        if slot < 0:
            raise TooManyTasks(
                f"cannot register {name!r}: the framework already runs {self.max_tasks} tasks"
                " (raise max_tasks in open_duet())"
            )
        directory = (root_uuid.dev, root_uuid.ino)
        watched, count = self._by_inode.get(directory, (root, 0))
        self._by_inode[directory] = (watched, count + 1)
        host: TaskHost = self if watched == root else _Alias(self, watched, root)
        task = Task(next(self._ids), name, event, root, slot=slot, root=root_uuid, host=host)
        self._tasks[slot] = task
        self._watched[slot] = watched
        added: list[Source] = []
        holding = False
        try:
            if "tracepoints" in self._source_names:
                self._hold_resolver(directory, watched)
                holding = True
            for source in self._sources:
                source.add_scope(watched)
                added.append(source)
        except BaseException:
            # A source refused the scope: nothing of the task stays registered.
            self._unregister(task, added, resolver=holding)
            raise
        self._start_intro(task, slot, again=None)
        return Registration(task)

    def _hold_resolver(self, directory: tuple[int, int], root: str) -> None:
        held = self._resolvers.get(directory)
        if held is not None:
            self._resolvers[directory] = (held[0], held[1] + 1)
            return
        resolver = HandleResolver.open(root)
        if not resolver.available:
            logger.warning("no file handles under %s: %s", root, resolver.reason)
        self._resolvers[directory] = (resolver, 1)

    async def _introduce(self, intro: _Introduction) -> None:
        with intro.scope:
            for source in self._sources:
                delay = _RESTART_DELAY
                while True:
                    try:
                        await source.introduce(intro.watched, intro)
                        break
                    except Exception as exc:
                        # One task's scan must not bring the framework down: the task hears
                        # that it may miss something (OVERFLOW) and the scan starts again.
                        what = f"failed a registration scan; again in {delay:.1f} s"
                        self._failed(source, exc, what)
                        if self._tasks.get(intro.slot) is intro.task:  # not another's slot
                            self.store.signal_overflow(1 << intro.slot)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, _RESTART_DELAY_MAX)
            # Until the rechecks are done their files are not covered: the intro stays, and
            # files with events meanwhile are rechecked in turn.
            intro.finish()
            await intro.wait_rechecked()
            while intro.missed or intro.passed:
                intro.finish()
                await intro.wait_rechecked()
        newer = self._intros.get(intro.slot)
        if newer is not None and newer is not intro and newer.task is intro.task:
            return  # replaced by a rescan, which marks the task scanned once done
        intro.task._mark_scanned()
        if newer is intro:
            del self._intros[intro.slot]
            if intro.again and self._tasks.get(intro.slot) is intro.task:
                self._start_intro(intro.task, intro.slot, again=False)

    def _recheck_later(
        self, intro: _Introduction, inodes: list[tuple[int, int]], attempt: int
    ) -> None:
        if self._group is not None and self._state == "open":
            self._group.start_soon(self._recheck, intro, inodes, attempt)
        else:
            intro.rechecked(inodes, attempt=attempt, settled=inodes)

    async def _recheck(
        self, intro: _Introduction, inodes: list[tuple[int, int]], attempt: int
    ) -> None:
        """Tell the task the state of files that had events while the scan did not cover them.

        An event that arrives before the scan covers a file cannot be routed to the task
        yet; where no periodic scan follows (the exact set), it would be lost. So the file
        is looked at once more, and its cached and dirty pages are told (the scan's own look
        at it was not: see :meth:`_Introduction.deliver`).

        Nothing may be told twice. After the look, the events queued so far are taken in
        while the file is still not covered. A file with none is covered and told: every
        later event comes after the look. A file with some is looked at again and this look
        dropped, up to ``_RECHECKS`` times; a file that keeps changing is then covered as it
        is. Files with no path under the task's scope have nothing to tell: covered at once.

        Where the periodic residency scan reports the changes (the unprivileged set), the
        task is told that scan's maps of the files instead of a look (see the comment below).
        """
        observations: list[Observation] = []
        settled: Collection[tuple[int, int]] = inodes
        try:
            watched = intro.watched
            located = [
                (dev, ino, path)
                for dev, ino in inodes
                for path in self.index.paths(dev, ino)[:1]
                if is_under(path, watched)
            ]
            known = self._sink.known_state
            if known is not None:
                # The periodic scan reports every later change as a diff from its own maps:
                # the task hears those maps, not the kernel's state, or a change between the
                # two would never reach it (a page told dirty, then written back before the
                # scan looked again, stayed dirty for good). Nothing is awaited from here to
                # covering the files, so no diff comes in between.
                for dev, ino, _ in located:
                    observations += known(dev, ino)
            else:
                observations = await anyio.to_thread.run_sync(_state_of, located)
                if self._intros.get(intro.slot) is intro and not intro.task.closed:
                    self._sink.settle()  # events from before the look: while not covered
                    if attempt < _RECHECKS:
                        settled = set(inodes).difference((d, i) for d, i, _ in located)
        finally:
            intro.rechecked(inodes, attempt=attempt, settled=settled)
        covered = intro.covered
        told = [observation for observation in observations if observation[0][:2] in covered]
        if told and self._intros.get(intro.slot) is intro and not intro.task.closed:
            self.store.ingest_for(intro.slot, told)

    def release(self, task: Task) -> None:
        """Deregister ``task`` (called by :meth:`Task.aclose`)."""
        self._unregister(task, self._sources, resolver=True)

    def _unregister(self, task: Task, sources: Sequence[Source], *, resolver: bool) -> None:
        """Forget ``task``: its slot, its scope in ``sources``, its hold on a resolver."""
        slot = task._slot
        if self._tasks.get(slot) is not task:
            return
        intro = self._intros.pop(slot, None)
        if intro is not None:
            intro.scope.cancel()
        del self._tasks[slot]
        watched = self._watched.pop(slot)
        directory = (task._root.dev, task._root.ino)
        count = self._by_inode[directory][1]
        if count > 1:
            self._by_inode[directory] = (watched, count - 1)
        else:
            del self._by_inode[directory]
        self.store.remove_slot(slot)
        for source in sources:
            source.remove_scope(watched)
        held = self._resolvers.get(directory) if resolver else None
        if held is not None:
            if held[1] > 1:
                self._resolvers[directory] = (held[0], held[1] - 1)
            else:
                del self._resolvers[directory]
                held[0].close()

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> Status:
        """A snapshot of the framework: tasks, sources and store."""
        await anyio.lowlevel.checkpoint()
        tasks = tuple(
            TaskStatus(task.id, task.name, task.mask, task.path, task.statistics())
            for task in sorted(self._tasks.values(), key=lambda t: t.id)
        )
        return Status(
            running=self.running,
            max_tasks=self.max_tasks,
            tasks=tasks,
            sources=tuple(self._source_status(source) for source in self._sources),
            store=self.store.statistics(),
        )


def _fd_limit_hint(code: int | None) -> str:
    """What to raise when ``code`` says that no file descriptor was left."""
    if code == errno.EMFILE:
        return " (this process has as many fds open as its RLIMIT_NOFILE allows)"
    if code == errno.ENFILE:
        return " (the system's file table is full: see /proc/sys/fs/file-max)"
    return ""


def _state_of(located: list[tuple[int, int, str]]) -> list[Observation]:
    """Each file's cached pages (ADDED) and dirty pages (DIRTY) now (a thread's job); files
    gone or replaced at their path are left out."""
    observations: list[Observation] = []
    for dev, ino, path in located:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dev, ino):
                continue
            key = (dev, ino, _kernel.inode_generation(fd))
            for field, event in (("cache", Event.ADDED), ("dirty", Event.DIRTY)):
                observations.extend(
                    (key, first, count, int(event))
                    for first, count in _kernel.page_runs(fd, st.st_size, field)
                )
        except OSError:
            continue
        finally:
            os.close(fd)
    return observations


def _confirm(hint: PathHint, dev: int, ino: int) -> tuple[int, int] | None:
    """The generation and link count of ``(dev, ino)`` if ``hint`` still leads to it.

    One ``stat``: the same inode with the same change time is the inode the scan saw, with
    the generation it read (a new inode that reused the number has its own change time).
    Otherwise the path is opened and the generation read again.
    """
    path, gen, ctime = hint
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    if st.st_ino != ino or st.st_dev != dev:
        return None
    if st.st_ctime_ns == ctime:
        return gen, st.st_nlink
    return generation_at(path, dev, ino)


@attrs.define(eq=False)
class _Introduction:
    """A running registration scan (see :class:`aioduet.sources.Introduction`)."""

    store: Store
    task: Task
    slot: int
    watched: str
    """The path the sources watch for the task (see ``Duet._watched``)."""
    recheck: Callable[[_Introduction, list[tuple[int, int]], int], None]
    covered: set[tuple[int, int]] = attrs.field(factory=set)
    missed: set[tuple[int, int]] = attrs.field(factory=set)
    """Inodes with events while not covered yet: looked at again once covered."""
    passed: set[tuple[int, int]] = attrs.field(factory=set)
    """Inodes with events before a look that may not reach them: looked at by :meth:`finish`
    unless the scan covers them."""
    rechecking: set[tuple[int, int]] = attrs.field(factory=set)
    """Inodes a recheck is looking at: not covered until it is done."""
    pending: int = 0
    """Rechecks under way."""
    _idle: anyio.Event | None = None
    scope: anyio.CancelScope = attrs.field(factory=anyio.CancelScope)
    again: bool | None = None
    """None for a registration's scan; for a rescan after lost observations, whether more
    were lost while it ran (another rescan follows it then)."""

    def looking(self) -> None:
        # Every file not covered yet is looked at from now on: what happened to it so far
        # will show in that look, and a recheck would report it a second time. Unless the
        # scan never reaches the file (created in a directory it listed already).
        # (A file under a recheck stays with it: the recheck looks at it again.)
        self.passed |= self.missed - self.rechecking
        self.missed &= self.rechecking

    def finish(self) -> None:
        """The scan is over: files that had events but that it never reached (created, or
        renamed into a directory it had listed) are looked at once more, as if covered late:
        their events were held back from the task."""
        leftover = (self.passed | self.missed) - self.covered - self.rechecking
        self.passed.clear()
        self.missed = leftover | (self.missed & self.rechecking)
        self.cover(leftover)

    def cover(self, inodes: Iterable[tuple[int, int]], attempt: int = 0) -> None:
        """The scan looked at these files: from now on their events reach the task.

        Files that had events while not covered are looked at again first (the recheck),
        and stay uncovered until that look is done and the events from before it are in:
        an event drained after a file is covered reaches the task, and one from before the
        recheck's look would then be reported twice, by the event and by the look.
        """
        fresh = set(inodes) - self.rechecking
        late = [inode for inode in fresh if inode in self.missed]
        done = fresh.difference(late)
        self.covered.update(done)
        self.passed.difference_update(fresh)
        if late:
            self.missed.difference_update(late)
            self.rechecking.update(late)
            self.pending += 1
            self.recheck(self, late, attempt + 1)

    def rechecked(
        self, inodes: list[tuple[int, int]], *, attempt: int, settled: Collection[tuple[int, int]]
    ) -> None:
        """The ``attempt``-th recheck of ``inodes`` is over: cover them, but look again at
        those with events since the look (unless ``settled``: covered as they are)."""
        self.rechecking.difference_update(inodes)
        self.missed.difference_update(settled)
        self.cover(inodes, attempt)
        self.pending -= 1
        if not self.pending and self._idle is not None:
            self._idle.set()

    async def wait_rechecked(self) -> None:
        """Wait until no recheck runs (they may start more while they run)."""
        while self.pending:
            self._idle = anyio.Event()
            await self._idle.wait()

    def deliver(self, observations: Sequence[Observation]) -> None:
        """The scan's look at covered files, for the new task only.

        Files under a recheck are left out: the recheck's later look tells their state.
        """
        if self.rechecking:
            rechecking = self.rechecking
            observations = [o for o in observations if o[0][:2] not in rechecking]
        if observations and not self.task.closed:
            self.store.ingest_for(self.slot, observations)


@attrs.define(eq=False)
class _Alias:
    """The framework as a task on a bind mount of a watched directory sees it.

    Sources watch the directory under the path another task registered; this task's paths
    are under its own: ``get_path`` answers with those, never with the other path.
    """

    duet: Duet
    watched: str
    alias: str

    @property
    def store(self) -> Store:
        return self.duet.store

    @property
    def index(self) -> PathIndex:
        return _AliasIndex(self.duet.index, self.watched, self.alias)

    def release(self, task: Task) -> None:
        self.duet.release(task)

    def locate(self, dev: int, ino: int) -> None:
        self.duet.locate(dev, ino)


class _AliasIndex(PathIndex):
    """The framework's path index, with paths under ``watched`` rebased to ``alias``."""

    def __init__(self, index: PathIndex, watched: str, alias: str) -> None:
        super().__init__()
        self._index, self._watched, self._alias = index, watched, alias

    def paths(self, dev: int, ino: int) -> tuple[str, ...]:
        return tuple(
            os.path.normpath(os.path.join(self._alias, os.path.relpath(p, self._watched)))
            if is_under(p, self._watched)
            else p
            for p in self._index.paths(dev, ino)
        )


@attrs.define(eq=False)
class _StartedOnce:
    """A task status that passes on only the first ``started()`` (sources restart)."""

    outer: anyio.abc.TaskStatus[None]
    done: bool = False

    def started(self, value: None = None) -> None:
        if not self.done:
            self.done = True
            self.outer.started(value)


def open_duet(
    sources: str | Sequence[str] = "auto",
    *,
    max_tasks: int = DEFAULT_MAX_TASKS,
    interval: float = 1.0,
    budget: int = DEFAULT_BUDGET,
    exclude: Iterable[str] = (),
) -> Duet:
    """Make an embedded framework; use it with ``async with``.

    Args:
        sources: ``"auto"`` (the exact set where it can run, else the unprivileged set, with
            the reason logged at INFO), ``"scan"`` (the unprivileged set), ``"exact"``
            (kernel tracepoints: root, tracefs), or a list of source names (or one
            comma-separated string of them).
        max_tasks: the most tasks registered at once (Duet's default is 8; at most 64).
        interval: seconds between two rounds of the periodic residency scan.
        budget: kernel calls per interval the periodic residency scan may make (three per
            file that is not cached, two per directory, more for cached files). It bounds the
            scan's CPU use whatever the size of the trees: a walk over ``F`` files in ``D``
            directories, nothing cached, takes about ``(3 F + 2 D) / budget`` intervals.
        exclude: glob patterns of paths no source watches, matched against the absolute
            path and against the last component (``"*.tmp"``, ``".git"``, ``"/data/cache"``).

    Raises:
        ValueError: an unknown source name or set, or ``max_tasks`` out of range.
        SourceUnavailable: a requested source cannot run here: at once for ``"exact"``
            without root or tracefs, on entering for kernel interfaces missing here.
    """
    if not 1 <= max_tasks <= 64:
        raise ValueError(f"max_tasks must be between 1 and 64, not {max_tasks}")
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_BUDGET:
        raise ValueError(f"budget must be an int of at least {MIN_BUDGET}, not {budget!r}")
    if isinstance(exclude, str):
        raise TypeError("exclude must be a list of patterns, not a single str")
    options = SourceOptions(interval=interval, budget=budget, exclude=Exclusions(tuple(exclude)))
    return Duet(max_tasks, source_names=resolve_sources(sources), options=options)
