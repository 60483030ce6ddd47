"""The benchmarks ``python -m bench`` runs, and their sizes in each profile.

``full`` is each script's own default run (the sizes the docs describe); ``quick`` shrinks
every one so that the whole suite takes under five minutes on the reference machine (2 CPUs);
``smoke`` is tiny: the test suite runs it so that no benchmark can rot. Every entry measures
aioduet and its peer in the same run; the peer is named here and in the report.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

PROFILES = ("smoke", "quick", "full")


@attrs.frozen
class Entry:
    """One benchmark run: ``bench/<script>`` with the arguments of a profile.

    Attributes:
        name: the key of its report in the runner's JSON (one script may be run twice, with
            different options, under two names).
        script: the file in ``bench/``.
        title: what it measures, in a few words.
        peer: what aioduet is compared with in the same run.
        root: it needs root (tracefs, memory cgroups, the exact set).
        dir_flag: the option that says where its files go (the runner gives each entry a
            fresh directory of its own), or None when it makes no files.
        args: the options for each profile; a profile missing from it does not run the entry.
        timeout: seconds the entry may take in each profile.
    """

    name: str
    script: str
    title: str
    peer: str
    root: bool
    dir_flag: str | None
    args: Mapping[str, tuple[str, ...]]
    timeout: Mapping[str, float] = attrs.field(
        factory=lambda: {"smoke": 240.0, "quick": 240.0, "full": 3 * 3600.0}
    )


def _a(text: str) -> tuple[str, ...]:
    return tuple(text.split())


ENTRIES: tuple[Entry, ...] = (
    Entry(
        "store_ingest",
        "store_ingest.py",
        "event store: observations merged and drained per second, memory per page",
        "a naive dict-of-sets store and a dict-update floor",
        root=False,
        dir_flag=None,
        args={
            "smoke": _a("--pages 4000 --files 40 --repeat 1 --memory-files 20"),
            "quick": _a("--pages 200000 --files 2000 --repeat 1 --memory-files 100"),
            "full": (),
        },
    ),
    Entry(
        "inotify_rate",
        "inotify_rate.py",
        "inotify source: events per second with no queue overflow",
        "a bare ctypes inotify reader (and pyinotify's Notifier)",
        root=False,
        dir_flag=None,
        args={
            "smoke": _a("--seconds 0.2 --rates 20000,0 --files 2"),
            "quick": _a("--seconds 1 --rates 100000,200000,0"),
            "full": (),
        },
    ),
    Entry(
        "tracepoint_rate",
        "tracepoint_rate.py",
        "tracepoint source: ring-buffer events drained into the store per second",
        "a bare parse of the same ring-buffer pages",
        root=True,
        dir_flag=None,
        args={
            "smoke": _a("--pages 256 --rounds 1 --buffer-kb 1024"),
            "quick": _a("--pages 16384 --rounds 2 --buffer-kb 65536"),
            "full": (),
        },
    ),
    Entry(
        "scan_tree",
        "scan_tree.py",
        "`aioduet scan -R --json` over a tree of small files, warm and evicted",
        "`vmtouch` and util-linux `fincore`",
        root=False,
        dir_flag="--base",
        args={
            "smoke": _a("--files 200 --repeat 1"),
            "quick": _a("--files 10000 --repeat 1"),
            "full": (),
        },
    ),
    Entry(
        "idle_cpu",
        "idle_cpu.py",
        "idle CPU of the unprivileged set over a large tree; time to notice an eviction",
        "the goal (1% of a core) and the residency budget's bound",
        root=False,
        dir_flag="--dir",
        args={
            "smoke": _a("--files 200 --dirs 4 --seconds 0.5 --hot 3 --interval 0.2"),
            "quick": _a("--files 10000 --dirs 100 --seconds 10 --hot 10"),
            "full": (),
        },
    ),
    Entry(
        "exact_latency",
        "exact_latency.py",
        "latency from a page entering the cache to `async for` (exact set)",
        "the goal (p99 <= 10 ms)",
        root=True,
        dir_flag="--dir",
        args={
            "smoke": _a("--pages 50 --gap 0.001"),
            "quick": _a("--pages 500"),
            "full": (),
        },
    ),
    Entry(
        "cached_first",
        "cached_first_picks.py",
        "cost of a `cached_first` pick as the tree grows",
        "a picker that rescans the tree with cachestat per pick",
        root=False,
        dir_flag="--base",
        args={
            "smoke": _a("--files 50,200 --rescan-picks 3"),
            "quick": _a("--files 500,5000 --rescan-picks 5"),
            "full": (),
        },
    ),
    Entry(
        "fio_overhead",
        "fio_overhead.py",
        "foreground fio throughput while the exact set watches",
        "the same fio job without aioduet",
        root=True,
        dir_flag="--dir",
        args={
            "smoke": _a("--runtime 1 --repeat 1 --size 8M"),
            "quick": _a("--runtime 2 --repeat 1 --size 256M"),
            "full": (),
        },
    ),
    Entry(
        "fio_record",
        "fio_overhead.py",
        "foreground fio throughput while `aioduet record` writes a recording",
        "the same fio job without aioduet",
        root=True,
        dir_flag="--dir",
        args={
            "smoke": _a("--runtime 1 --repeat 1 --size 8M --workloads randread --record 0.2"),
            "quick": _a("--runtime 2 --repeat 1 --size 256M --record 0.2"),
            "full": _a("--record 0.2"),
        },
    ),
    Entry(
        "piggyback",
        "piggyback.py",
        "backup, scrub and index run together: device bytes read and time",
        "the same tools without aioduet (their natural orders)",
        root=True,
        dir_flag="--dir",
        args={
            "smoke": _a("--size 8M --stagger 0.5 --via embedded,daemon"),
            "quick": _a("--size 512M --scenarios three --via embedded,daemon"),
            "full": _a("--via embedded,daemon"),
        },
    ),
    Entry(
        "daemon_items",
        "daemon_items.py",
        "items per second over the daemon's socket",
        "the embedded framework",
        root=False,
        dir_flag="--dir",
        args={
            "smoke": _a("--items 3000 --files 3 --clients 2 --repeat 1 --sources scan"),
            "quick": _a("--items 30000 --files 8 --clients 2 --repeat 1"),
            "full": (),
        },
    ),
    Entry(
        "quartet",
        "quartet.py",
        "Dask jobs with overlapping inputs: cache hit rate, device bytes, completion time",
        "Dask's default placement",
        root=True,
        dir_flag="--dir",
        args={
            "smoke": _a(
                "--workers 2 --files-per-job 4 --jobs 3 --file-mib 1 --overlaps 0.5,1"
                " --repeat 1 --gap 0.5 --via daemon --detail"
            ),
            "quick": _a(
                "--workers 2 --files-per-job 6 --jobs 4 --file-mib 16 --overlaps 0.5 --repeat 2"
                " --gap 0.5"
            ),
            "full": (),
        },
    ),
    Entry(
        "flood",
        "flood.py",
        "convergence after a flood of file operations, page for page",
        "the kernel's page maps (mincore) of every file",
        root=True,
        dir_flag="--dir",
        args={
            "smoke": _a("--sets scan,exact --files 40 --seconds 3 --settle 20 --trace-buffer-kb 4"),
            "quick": _a("--files 100 --seconds 4"),
            "full": (),
        },
    ),
    Entry(
        "soak",
        "soak.py",
        "floods in rounds: RSS, fds, threads and store size over time",
        "flat series, and the kernel's page maps at the end",
        root=True,
        dir_flag="--dir",
        args={
            "smoke": _a(
                "--sets scan,exact --minutes 0.4 --files 40 --burst 4 --pause 2 --sample 1"
                " --settle 30"  # the exact set's views took up to 21 s to agree again
            ),
            "quick": _a("--minutes 0.3 --files 40 --burst 4 --pause 2 --sample 1 --settle 10"),
            "full": (),
        },
    ),
)
