"""Store ingest: observations merged per second and memory per pending page.

Four scenarios run against :class:`aioduet.store.Store` with ``--tasks`` tasks registered
(masks cycle through EXISTS, ADDED|REMOVED, ADDED|DIRTY, EXISTS|MODIFIED; relevance is True
for every file), over ``--pages`` pages spread evenly over ``--files`` files:

* ``single_pages``: one observation per page (count 1, ADDED), as tracepoint folio events;
* ``runs``: the same pages as runs of up to 16 pages, as residency diffs;
* ``churn``: half the pages, each ADDED and later REMOVED (the state-based cancel path);
* ``drain``: every task drains everything that ``single_pages`` left pending.

Pages arrive in bursts of 16 consecutive pages of one file (a readahead window), the bursts
of all files shuffled with a fixed seed; sources hand the store batches of 512 observations.

Two peers run in the same process, interleaved with the store on every repetition, so the
figures that matter are ratios (this machine's absolute times are noisy):

* ``naive``: one ``dict[(key, page, slot)] -> int`` with the same merge rules applied
  straightforwardly per task (what a first implementation would do);
* ``floor``: a bare ``d[k] = d.get(k, 0) | 1`` per page observation (for the drain: one
  ``dict.pop`` per pending page and task), the cost of one dict update in CPython.

Memory is traced with :mod:`tracemalloc` on a sample of ``--memory-files`` files of the same
shape (tracing makes each allocation ~20x slower, so 1M pages would take minutes), then
cross-checked at full scale with a ``sys.getsizeof`` walk of the store that ``single_pages``
filled. Not a timed test: it prints one JSON object and never fails on a slow machine.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import gc
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from _common import machine

from aioduet import Event
from aioduet.store import Key, Observation, Run, Store, effective_mask

MASKS = (
    Event.EXISTS,
    Event.ADDED | Event.REMOVED,
    Event.ADDED | Event.DIRTY,
    Event.EXISTS | Event.MODIFIED,
)
"""Task masks, cycled: two state-based, one event-based, one of each kind."""
MAX_SLOTS = 8  # the framework's default max_tasks
BURST = 16  # pages per readahead burst, and per run in the "runs" scenario
BATCH = 512  # observations per ingest() call, as a source reads them
MAX_RUNS = 256  # runs per drain() call: a task's default fetch size
CHURN_LAG = 1024  # bursts between a burst's ADDED and its REMOVED in the churn stream
STALL_FACTOR = 10  # observations ingested while the consumer stalls, per pending page
DEV = 0xFE00  # st_dev of /dev/vda (254:0)
# Plain ints, as sources hand them over (IntFlag arithmetic runs in Python, ~50x slower).
ADDED, REMOVED, DIRTY, FLUSHED = (
    int(e) for e in (Event.ADDED, Event.REMOVED, Event.DIRTY, Event.FLUSHED)
)
STALL_EVENTS = (REMOVED, ADDED, DIRTY, FLUSHED)

Burst = tuple[Key, int, int]
"""``(key, first page, count)``: pages that arrive together."""
PageKey = tuple[Key, int]


def _always(key: Key, slot: int) -> bool:
    return True


# -- the page streams ----------------------------------------------------------------------


def make_keys(files: int, seed: int) -> list[Key]:
    """``(dev, ino, gen)`` keys with realistic (non-cached) inode and generation numbers."""
    rng = random.Random(seed)
    return [(DEV, 1_000_000 + 7 * i, rng.getrandbits(32)) for i in range(files)]


def make_bursts(keys: Sequence[Key], pages: int, seed: int) -> list[Burst]:
    """``pages`` pages spread evenly over ``keys``, cut into shuffled bursts of ``BURST``."""
    per_file, extra = divmod(pages, len(keys))
    bursts: list[Burst] = []
    for number, key in enumerate(keys):
        size = per_file + (number < extra)
        bursts.extend((key, first, min(BURST, size - first)) for first in range(0, size, BURST))
    random.Random(seed).shuffle(bursts)
    return bursts


def singles(bursts: Iterable[Burst], event: int) -> list[Observation]:
    return [
        (key, page, 1, event)
        for key, first, count in bursts
        for page in range(first, first + count)
    ]


def as_runs(bursts: Iterable[Burst], event: int) -> list[Observation]:
    return [(key, first, count, event) for key, first, count in bursts]


def churn_stream(bursts: Sequence[Burst], pages: int) -> list[Observation]:
    """``pages`` observations: half as many pages ADDED, each REMOVED ``CHURN_LAG`` bursts later."""
    chosen: list[Burst] = []
    left = pages // 2
    for key, first, count in bursts:
        if left <= 0:
            break
        chosen.append((key, first, min(count, left)))
        left -= count
    stream: list[Observation] = []
    for number, burst in enumerate(chosen):
        stream.extend(singles([burst], ADDED))
        if number >= CHURN_LAG:
            stream.extend(singles([chosen[number - CHURN_LAG]], REMOVED))
    stream.extend(singles(chosen[max(0, len(chosen) - CHURN_LAG) :], REMOVED))
    return stream


def page_keys(observations: Iterable[Observation]) -> list[PageKey]:
    """One ``(key, page)`` per page observed: what the floor loop updates."""
    return [
        (key, page) for key, first, count, _ in observations for page in range(first, first + count)
    ]


def batched(observations: Sequence[Observation]) -> list[list[Observation]]:
    return [list(observations[i : i + BATCH]) for i in range(0, len(observations), BATCH)]


# -- the stores ----------------------------------------------------------------------------


def make_store(tasks: int) -> Store:
    store = Store(MAX_SLOTS, relevance=_always)
    for number in range(tasks):
        store.add_slot(MASKS[number % len(MASKS)])
    return store


class NaiveStore:
    """The baseline: one dict entry per (file, page, task), merge rules applied per task."""

    def __init__(self, tasks: int, relevance: Callable[[Key, int], bool | None]) -> None:
        self.masks = [
            (int(want), int(cancels))
            for want, cancels in (effective_mask(MASKS[n % len(MASKS)]) for n in range(tasks))
        ]
        """``(wanted events, low bits of the cancelling pairs)`` per slot, as plain ints."""
        self.relevance = relevance
        self.relevant: dict[tuple[Key, int], bool] = {}
        self.pending: dict[tuple[Key, int, int], int] = {}

    def ingest(self, observations: Iterable[Observation]) -> None:
        pending = self.pending
        for key, first, count, event in observations:
            for slot, (want, cancels) in enumerate(self.masks):
                bits = event & want
                if not bits or not self.is_relevant(key, slot):
                    continue
                for page in range(first, first + count):
                    value = pending.get((key, page, slot), 0)
                    if cancels & DIRTY and bits & REMOVED:
                        value &= ~DIRTY  # a page gone from the cache is not dirty any more
                    value |= bits
                    if cancels & ADDED and value & ADDED and value & REMOVED:
                        value &= ~(ADDED | REMOVED)
                    if cancels & DIRTY and value & DIRTY and value & FLUSHED:
                        value &= ~(DIRTY | FLUSHED)
                    if value:
                        pending[key, page, slot] = value
                    else:
                        pending.pop((key, page, slot), None)

    def is_relevant(self, key: Key, slot: int) -> bool:
        answer = self.relevant.get((key, slot))
        if answer is None:
            answer = self.relevant[key, slot] = bool(self.relevance(key, slot))
        return answer

    def drain(self, slot: int) -> list[Run]:
        """Everything pending for the slot, as runs sorted by file and page."""
        mine = sorted((k[0], k[1], v) for k, v in self.pending.items() if k[2] == slot)
        runs: list[Run] = []
        for key, page, state in mine:
            del self.pending[key, page, slot]
            if runs:
                last_key, last_first, last_count, last_state = runs[-1]
                if (last_key, last_first + last_count, last_state) == (key, page, state):
                    runs[-1] = (key, last_first, last_count + 1, state)
                    continue
            runs.append((key, page, 1, state))
        return runs

    def drain_all(self) -> list[Run]:
        return [run for slot in range(len(self.masks)) for run in self.drain(slot)]


def drain_all(store: Store, tasks: int) -> list[Run]:
    runs: list[Run] = []
    for slot in range(tasks):
        while store.has_pending(slot):
            runs.extend(store.drain(slot, MAX_RUNS))
    return runs


def check_equivalence(tasks: int) -> None:
    """The naive peer must implement the store's merge rules, or the ratios mean nothing."""
    keys = make_keys(40, seed=1)
    bursts = make_bursts(keys, 40 * 37, seed=1)
    for stream in (singles(bursts, ADDED), churn_stream(bursts, 40 * 37)):
        store, naive = make_store(tasks), NaiveStore(tasks, _always)
        store.ingest(stream)
        naive.ingest(stream)
        for slot in range(tasks):
            got: list[Run] = []
            while store.has_pending(slot):
                got.extend(store.drain(slot, MAX_RUNS))
            if sorted(got) != naive.drain(slot):
                raise AssertionError(f"naive baseline disagrees with the store for slot {slot}")


# -- timing --------------------------------------------------------------------------------


def timed(action: Callable[[], object]) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def timed_drain(timings: Timings, implementation: str, drain: Callable[[], list[Run]]) -> None:
    start = time.process_time()
    runs = len(drain())
    timings.add("drain", implementation, time.process_time() - start)
    timings.counts[implementation] = runs


def ingest_batches(sink: Store | NaiveStore, batches: Sequence[list[Observation]]) -> None:
    for batch in batches:
        sink.ingest(batch)


def floor_updates(table: dict[PageKey, int], keys: Sequence[PageKey]) -> None:
    get = table.get
    for key in keys:
        table[key] = get(key, 0) | 1


def floor_drain(tables: Sequence[dict[PageKey, int]], keys: Sequence[PageKey]) -> None:
    for table in tables:
        pop = table.pop
        for key in keys:
            pop(key)


class Timings:
    """Seconds per (scenario, implementation), one sample per repetition."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, str], list[float]] = {}
        self.counts: dict[str, int] = {}
        """Runs returned by the last drain of each implementation."""

    def add(self, scenario: str, implementation: str, seconds: float) -> None:
        self.samples.setdefault((scenario, implementation), []).append(seconds)

    def best(self, scenario: str, implementation: str) -> float:
        return min(self.samples[scenario, implementation])


def one_repetition(
    timings: Timings,
    tasks: int,
    batches: dict[str, list[list[Observation]]],
    floors: dict[str, list[PageKey]],
    naive: bool,
) -> None:
    """Each scenario once for the store and its peers, interleaved (the naive one if asked)."""
    for scenario in ("single_pages", "runs", "churn"):
        store = make_store(tasks)
        timings.add(scenario, "aioduet", timed(partial(ingest_batches, store, batches[scenario])))
        if scenario == "single_pages":
            timed_drain(timings, "aioduet", partial(drain_all, store, tasks))
        del store
        gc.collect()
        if naive:
            baseline = NaiveStore(tasks, _always)
            timings.add(
                scenario, "naive", timed(partial(ingest_batches, baseline, batches[scenario]))
            )
            if scenario == "single_pages":
                timed_drain(timings, "naive", baseline.drain_all)
            del baseline
            gc.collect()
        table: dict[PageKey, int] = {}
        timings.add(scenario, "floor", timed(partial(floor_updates, table, floors[scenario])))
        if scenario == "single_pages":
            copies = [table.copy() for _ in range(tasks)]
            timings.add("drain", "floor", timed(partial(floor_drain, copies, floors[scenario])))
            del copies
        del table
        gc.collect()


def scenario_result(timings: Timings, scenario: str, work: dict[str, float]) -> dict[str, Any]:
    """``work`` maps a rate's name to the amount done (the first one is ``per_second``)."""
    seconds = timings.best(scenario, "aioduet")
    naive, floor = timings.best(scenario, "naive"), timings.best(scenario, "floor")
    result: dict[str, Any] = {"seconds": round(seconds, 4)}
    for number, (name, amount) in enumerate(work.items()):
        if number == 0:
            result["per_second"] = round(amount / seconds)
        result[f"{name}_per_second"] = round(amount / seconds)
    result.update(
        naive_seconds=round(naive, 4),
        floor_seconds=round(floor, 4),
        ratio_vs_naive=round(seconds / naive, 3),
        ratio_vs_floor=round(seconds / floor, 3),
        all_seconds={
            impl: [round(s, 4) for s in timings.samples[scenario, impl]]
            for impl in ("aioduet", "naive", "floor")
        },
    )
    return result


# -- memory --------------------------------------------------------------------------------


def traced(build: Callable[[], object]) -> tuple[int, object]:
    """Bytes still allocated by ``build()`` once it returns, and what it returned."""
    gc.collect()
    tracemalloc.start()
    try:
        built = build()
        gc.collect()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current, built


def filled(
    tasks: int, files: int, pages: int, seed: int, naive: bool = False
) -> Store | NaiveStore:
    # Keys are made here, under tracing: the store keeps them alive, so they are its cost.
    bursts = make_bursts(make_keys(files, seed), pages, seed)
    sink: Store | NaiveStore = NaiveStore(tasks, _always) if naive else make_store(tasks)
    sink.ingest(singles(bursts, ADDED))
    return sink


def stalled_growth(tasks: int, files: int, pages: int, seed: int) -> dict[str, int]:
    """Memory and pending pages before and after ``STALL_FACTOR`` x more observations."""
    gc.collect()
    tracemalloc.start()
    try:
        keys = make_keys(files, seed)
        bursts = make_bursts(keys, pages, seed)
        store = make_store(tasks)
        store.ingest(singles(bursts, ADDED))
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        pending_before = store.statistics().pending_pages
        for round_ in range(STALL_FACTOR):  # nobody drains: the consumer stalled
            store.ingest(singles(bursts, STALL_EVENTS[round_ % len(STALL_EVENTS)]))
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
        return {
            "stalled_observations": pages * STALL_FACTOR,
            "pending_pages_before": pending_before,
            "pending_pages_after": store.statistics().pending_pages,
            "traced_bytes_before": before,
            "traced_bytes_after": after,
            "stalled_growth_bytes": after - before,
        }
    finally:
        tracemalloc.stop()


def deep_sizeof(root: object) -> int:
    """Bytes of the containers, numbers and aioduet objects reachable from ``root``.

    Each object counts ``sys.getsizeof`` rounded up to 8 bytes, which is what CPython asks
    the allocator for (a one-digit int reports 28 but takes a 32-byte block), so the sum
    matches tracemalloc's within a fraction of a percent.
    """
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | enum.Enum):
            continue
        seen.add(id(obj))
        if isinstance(obj, int | str | float):
            total += -(-sys.getsizeof(obj) // 8) * 8
        elif isinstance(obj, dict | list | tuple | set) or type(obj).__module__.startswith(
            "aioduet."
        ):
            total += -(-sys.getsizeof(obj) // 8) * 8
            stack.extend(gc.get_referents(obj))
    return total


def measure_memory(tasks: int, files: int, pages: int, seed: int) -> dict[str, Any]:
    """Bytes per pending page and per file entry, solved from two shapes of the same files.

    ``files`` files with ``pages / files`` pages each cost ``files * F + pages * P``;
    the same files with one page each cost ``files * (F + P)``.
    """
    full, _ = traced(lambda: filled(tasks, files, pages, seed))
    one, _ = traced(lambda: filled(tasks, files, files, seed))
    naive, _ = traced(lambda: filled(tasks, files, pages, seed, naive=True))
    per_page = (full - one) / (pages - files)
    per_file = one / files - per_page
    return {
        "sample_files": files,
        "sample_pending_pages": pages,
        "bytes_per_pending_page": round(per_page, 1),
        "bytes_per_file_entry": round(per_file, 1),
        "bytes_per_pending_page_all_in": round(full / pages, 1),
        "naive_bytes_per_pending_page": round(naive / pages, 1),
        "naive_vs_aioduet": round(naive / full, 2),
        "stalled": stalled_growth(tasks, files, pages, seed),
    }


def full_scale_check(
    tasks: int, batches: Sequence[list[Observation]], memory: dict[str, Any]
) -> dict[str, Any]:
    """The store after ``single_pages`` at full scale, sized by a ``getsizeof`` walk."""
    store = make_store(tasks)
    ingest_batches(store, batches)
    stats = store.statistics()
    walked = deep_sizeof(store)
    predicted = (
        stats.files * memory["bytes_per_file_entry"]
        + stats.pending_pages * memory["bytes_per_pending_page"]
    )
    return {
        "files": stats.files,
        "pending_pages": stats.pending_pages,
        "getsizeof_bytes": walked,
        "predicted_bytes": round(predicted),
        "getsizeof_vs_predicted": round(walked / predicted, 3),
        "statistics_memory_bytes": stats.memory_bytes,
    }


# -- main ----------------------------------------------------------------------------------


def machine_details() -> dict[str, Any]:
    """The shared description, plus the names this report used before it (bench/README.md)."""
    details = machine()
    return {**details, "machine": details["architecture"], "cpu": details["cpu_model"] or ""}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark aioduet's event store against a naive store and a dict floor.",
    )
    parser.add_argument(
        "--pages", type=int, default=1_000_000, help="page observations (default 1M)"
    )
    parser.add_argument("--files", type=int, default=10_000, help="files they spread over")
    parser.add_argument("--tasks", type=int, default=4, help=f"tasks registered (1-{MAX_SLOTS})")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the best is kept")
    parser.add_argument(
        "--naive-repeat",
        type=int,
        default=1,
        help="repetitions that also time the naive peer (default 1: it is 3-15x slower)",
    )
    parser.add_argument(
        "--memory-files",
        type=int,
        default=200,
        help="files in the tracemalloc sample (same pages per file; default 200)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the burst order")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    args = parser.parse_args(argv)
    if not 1 <= args.tasks <= MAX_SLOTS:
        parser.error(f"--tasks must be between 1 and {MAX_SLOTS}")
    if args.files < 1 or args.pages < 2 * args.files or args.repeat < 1 or args.naive_repeat < 1:
        parser.error("need --files >= 1, --pages >= 2 * --files, --repeat and --naive-repeat >= 1")
    return args


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    tasks, pages, files = args.tasks, args.pages, args.files
    check_equivalence(tasks)
    bursts = make_bursts(make_keys(files, args.seed), pages, args.seed)
    streams = {
        "single_pages": singles(bursts, ADDED),
        "runs": as_runs(bursts, ADDED),
        "churn": churn_stream(bursts, pages),
    }
    floors = {name: page_keys(stream) for name, stream in streams.items()}
    floors["runs"] = floors["single_pages"]
    batches = {name: batched(stream) for name, stream in streams.items()}
    # Millions of long-lived stream tuples: keep them out of every collection that follows.
    gc.freeze()
    timings = Timings()
    for number in range(args.repeat):
        progress(f"repetition {number + 1}/{args.repeat} ({time.perf_counter() - started:.0f} s)")
        one_repetition(timings, tasks, batches, floors, naive=number < args.naive_repeat)
    drained_runs = timings.counts["aioduet"]
    if timings.counts["naive"] != drained_runs:
        raise AssertionError("the naive baseline drained a different number of runs")
    scenarios = {
        "single_pages": scenario_result(
            timings, "single_pages", {"observations": len(streams["single_pages"])}
        ),
        "runs": scenario_result(
            timings, "runs", {"pages": pages, "observations": len(streams["runs"])}
        ),
        "churn": scenario_result(timings, "churn", {"observations": len(streams["churn"])}),
        "drain": scenario_result(timings, "drain", {"pages": pages * tasks, "runs": drained_runs}),
    }
    del streams, floors
    gc.collect()
    progress(f"memory ({time.perf_counter() - started:.0f} s)")
    sample = min(args.memory_files, files)
    memory = measure_memory(tasks, sample, pages * sample // files, args.seed)
    memory["stalled_growth_bytes"] = memory["stalled"]["stalled_growth_bytes"]
    memory["full_scale"] = full_scale_check(tasks, batches["single_pages"], memory)
    gc.unfreeze()
    return {
        "benchmark": "store_ingest",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_details(),
        "parameters": {
            "pages": pages,
            "files": files,
            "tasks": tasks,
            "masks": [str(MASKS[n % len(MASKS)]) for n in range(tasks)],
            "repeat": args.repeat,
            "naive_repeat": min(args.naive_repeat, args.repeat),
            "seed": args.seed,
            "burst": BURST,
            "batch": BATCH,
            "max_runs_per_drain": MAX_RUNS,
            "max_slots": MAX_SLOTS,
            "memory_files": sample,
        },
        "scenarios": scenarios,
        "memory": memory,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
