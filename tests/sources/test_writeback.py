"""The writeback source: counter parsers, the progress rule, a fake procfs, and the real one."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import aioduet.store
from aioduet import _kernel
from aioduet._paths import PathIndex
from aioduet.errors import SourceUnavailable
from aioduet.sources import Sink
from aioduet.sources._procfs import CounterFormatError, Counters, parse_meminfo, parse_vmstat
from aioduet.sources.writeback import WritebackSource

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "procfs"
#: A capture of this machine kind (6.18: no nr_writeback_temp, WritebackTmp 0).
NEW = FIXTURES / "linux-6.18"
#: The older layout: the same capture with nr_writeback_temp back after nr_writeback (where
#: kernels before its removal print it) and nr_throttled_written (5.19+) dropped.
OLD = FIXTURES / "with-temp"
PAGE_KB = _kernel.PAGE_SIZE // 1024


def oracle(text: str) -> dict[str, int]:
    """Every ``key value`` line, the slow obvious way (meminfo: kB converted to pages)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, value, *unit = line.replace(":", " ", 1).split()
        out[key] = int(value) // PAGE_KB if unit == ["kB"] else int(value)
    return out


# -- parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [NEW, OLD], ids=["6.18", "with-temp"])
def test_parsers_read_both_layouts(layout: Path) -> None:
    vm = oracle((layout / "vmstat").read_text())
    mem = oracle((layout / "meminfo").read_text())
    counters = parse_vmstat((layout / "vmstat").read_bytes())
    assert counters == Counters(
        dirty=vm["nr_dirty"],
        writeback=vm["nr_writeback"] + vm.get("nr_writeback_temp", 0),
        dirtied=vm["nr_dirtied"],
        written=vm["nr_written"],
    )
    assert parse_meminfo((layout / "meminfo").read_bytes(), _kernel.PAGE_SIZE) == Counters(
        dirty=mem["Dirty"], writeback=mem["Writeback"] + mem["WritebackTmp"]
    )


def test_old_layout_counts_fuse_temp_pages_as_writeback() -> None:
    assert "nr_writeback_temp 44\n" in (OLD / "vmstat").read_text()
    assert parse_vmstat((OLD / "vmstat").read_bytes()).writeback == 300 + 44
    # Both files describe the same kernel counters: the fixtures agree with each other.
    meminfo = parse_meminfo((OLD / "meminfo").read_bytes(), 4096)
    assert (meminfo.dirty, meminfo.writeback) == (1200, 300 + 44)


def test_the_real_files_parse() -> None:
    assert parse_vmstat(Path("/proc/vmstat").read_bytes()).written is not None
    parse_meminfo(Path("/proc/meminfo").read_bytes(), _kernel.PAGE_SIZE)


VMSTAT = (NEW / "vmstat").read_bytes()
MEMINFO = (NEW / "meminfo").read_bytes()


def replace_line(data: bytes, key: bytes, line: bytes) -> bytes:
    return re.sub(rb"^" + re.escape(key) + rb"(?=\s|$).*$", line, data, count=1, flags=re.M)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "nr_dirty is missing"),
        (replace_line(VMSTAT, b"nr_written", b""), "nr_written is missing"),
        (replace_line(VMSTAT, b"nr_dirty", b"nr_dirty 12x"), "nr_dirty is not a number"),
        (replace_line(VMSTAT, b"nr_dirty", b"nr_dirty -3"), "nr_dirty is not a number"),
        (replace_line(VMSTAT, b"nr_dirty", b"nr_dirty 1_000"), "nr_dirty is not a number"),
        (replace_line(VMSTAT, b"nr_dirty", b"nr_dirty"), "nr_dirty is missing"),
        (replace_line(VMSTAT, b"nr_written", b"nr_written " + b"9" * 5000), "not a number"),
        (VMSTAT[: VMSTAT.index(b"nr_written ") + 13], "nr_written line is truncated"),
        (b"nr_dirty 1\nnr_writeback 0\nnr_written 5", "nr_written line is truncated"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_malformed_vmstat_raises_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(CounterFormatError, match=message):
        parse_vmstat(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"MemTotal: 1 kB\n", "Dirty: is missing"),
        (replace_line(MEMINFO, b"Writeback:", b"Writeback: 12"), "Writeback: is not"),
        (replace_line(MEMINFO, b"Dirty:", b"Dirty: 12 MB"), "Dirty: is not"),
        (replace_line(MEMINFO, b"Dirty:", b"Dirty: x kB"), "Dirty: is not a number"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_malformed_meminfo_raises_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(CounterFormatError, match=message):
        parse_meminfo(data, _kernel.PAGE_SIZE)


def test_meminfo_without_writeback_tmp_is_the_future_layout() -> None:
    data = replace_line(MEMINFO, b"WritebackTmp:", b"")
    assert parse_meminfo(data, _kernel.PAGE_SIZE) == parse_meminfo(MEMINFO, _kernel.PAGE_SIZE)


def parses_or_refuses(parse: Callable[[bytes], Counters], data: bytes) -> Counters | None:
    try:
        return parse(data)
    except CounterFormatError:
        return None


def meminfo(data: bytes) -> Counters:
    return parse_meminfo(data, _kernel.PAGE_SIZE)


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_the_documented_error(data: bytes) -> None:
    parses_or_refuses(parse_vmstat, data)
    parses_or_refuses(meminfo, data)


@given(st.sampled_from([VMSTAT, MEMINFO]), st.integers(0, 5000), st.binary(max_size=12))
def test_corrupted_real_files_raise_only_the_documented_error(
    real: bytes, at: int, junk: bytes
) -> None:
    data = real[:at] + junk + real[at + len(junk) :]
    parses_or_refuses(parse_vmstat, data)
    parses_or_refuses(meminfo, data)


@given(st.integers(0, len(VMSTAT)), st.integers(0, len(MEMINFO)))
def test_a_truncated_file_never_gives_a_wrong_number(vm_end: int, mem_end: int) -> None:
    """A read cut short either fails or gives exactly the whole file's counters."""
    got = parses_or_refuses(parse_vmstat, VMSTAT[:vm_end])
    assert got is None or got == parse_vmstat(VMSTAT)
    got = parses_or_refuses(meminfo, MEMINFO[:mem_end])
    assert got is None or got == meminfo(MEMINFO)


# -- the progress rule ---------------------------------------------------------------------

BASE = Counters(dirty=100, writeback=10, dirtied=1000, written=900)


@pytest.mark.parametrize(
    ("new", "progressed"),
    [
        (BASE, False),
        (Counters(dirty=150, writeback=10, dirtied=1050, written=900), False),  # dirtying only
        (Counters(dirty=100, writeback=10, dirtied=1000, written=901), True),  # writeback ended
        (Counters(dirty=100, writeback=12, dirtied=1000, written=900), True),  # started
        (Counters(dirty=100, writeback=8, dirtied=1000, written=900), True),  # temp pages done
        (Counters(dirty=90, writeback=10, dirtied=1000, written=900), True),  # truncated dirty
        # 20 pages dirtied, 20 cleaned by a truncate: the dirty gauge stands still, yet
        # pages left the dirty state.
        (Counters(dirty=100, writeback=10, dirtied=1020, written=900), True),
        # meminfo has no cumulative counters: only the gauges speak.
        (Counters(dirty=90, writeback=10), True),
        (Counters(dirty=110, writeback=10), False),
    ],
)
def test_progress_rule(new: Counters, progressed: bool) -> None:
    assert new.progressed_since(BASE) is progressed


def test_progress_rule_without_dirtied_uses_the_dirty_gauge() -> None:
    old = Counters(dirty=100, writeback=0, dirtied=None, written=5)
    assert Counters(dirty=99, writeback=0, dirtied=None, written=5).progressed_since(old)
    assert not Counters(dirty=101, writeback=0, dirtied=None, written=5).progressed_since(old)


# -- the source on a fake procfs -----------------------------------------------------------


class RecordingChecker:
    """A Checker that only remembers what it was asked."""

    def __init__(self) -> None:
        self.dirty_checks = 0
        self.other: list[str] = []

    def check_paths(self, paths: Iterable[str]) -> None:
        self.other.append("check_paths")

    def check_tree(self, path: str) -> None:
        self.other.append("check_tree")

    def path_gone(self, path: str) -> None:
        self.other.append("path_gone")

    def path_moved(self, old: str, new: str) -> None:
        self.other.append("path_moved")

    def check_dirty(self) -> None:
        self.dirty_checks += 1

    def rescan(self, root: str | None) -> None:
        self.other.append("rescan")

    def cut(self, dev: int, ino: int, end: int) -> None:
        self.other.append("cut")


def make_sink(checker: RecordingChecker | None) -> Sink:
    store = aioduet.store.Store(8, relevance=lambda k, s: True, notify=lambda s: None)
    sink = Sink(store, PathIndex())
    if checker is not None:
        sink.attach(checker)
    return sink


class FakeProcfs:
    """A directory with vmstat and meminfo that tests rewrite in place (same inode, as procfs)."""

    def __init__(self, root: Path, old_layout: bool = False) -> None:
        self.root = root
        self.layout = OLD if old_layout else NEW
        root.mkdir(exist_ok=True)
        self.set(dirty=100, writeback=0, temp=0, dirtied=1000, written=900)

    def set(self, **values: int) -> None:
        self.values = values
        vmstat = (self.layout / "vmstat").read_bytes()
        for key in ("dirty", "writeback", "writeback_temp", "dirtied", "written"):
            value = values.get(key if key != "writeback_temp" else "temp", 0)
            vmstat = replace_line(vmstat, b"nr_" + key.encode(), f"nr_{key} {value}".encode())
        mem = (self.layout / "meminfo").read_bytes()
        for key, value in (("Dirty:", values["dirty"]), ("Writeback:", values["writeback"])):
            line = f"{key} {value * PAGE_KB:>12} kB".encode()
            mem = replace_line(mem, key.encode(), line)
        self.write("vmstat", vmstat)
        self.write("meminfo", mem)

    def change(self, **delta: int) -> None:
        self.set(**{k: v + delta.get(k, 0) for k, v in self.values.items()})

    def write(self, name: str, data: bytes) -> None:
        with (self.root / name).open("r+b" if (self.root / name).exists() else "wb") as f:
            f.write(data)
            f.truncate()


async def wait_until(condition: Callable[[], bool], seconds: float = 2) -> None:
    """Poll ``condition`` on the loop, failing after ``seconds``."""
    with anyio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (the source has no event to wait on)
            await anyio.sleep(0.005)


async def polls(source: WritebackSource, count: int) -> None:
    """Wait until the source has polled ``count`` more times."""
    target = source.status().passes + count
    await wait_until(lambda: source.status().passes >= target)


@asynccontextmanager
async def running(source: WritebackSource) -> AsyncIterator[WritebackSource]:
    async with anyio.create_task_group() as tg:
        await tg.start(source.run)
        yield source
        tg.cancel_scope.cancel()


@pytest.fixture
def fake(tmp_path: Path) -> FakeProcfs:
    return FakeProcfs(tmp_path / "proc")


@pytest.fixture
def checker() -> RecordingChecker:
    return RecordingChecker()


def source_on(fake: FakeProcfs, checker: RecordingChecker | None) -> WritebackSource:
    source = WritebackSource(make_sink(checker), poll=0.005, procfs=str(fake.root))
    source.add_scope("/data")
    return source


async def test_writeback_progress_wakes_the_checker(
    fake: FakeProcfs, checker: RecordingChecker
) -> None:
    async with running(source_on(fake, checker)) as source:
        await polls(source, 3)  # the first poll is the baseline
        assert checker.dirty_checks == 0
        fake.change(written=8, dirty=-8)
        await wait_until(lambda: checker.dirty_checks == 1)
        await polls(source, 3)
        assert checker.dirty_checks == 1, "the same counters woke the checker twice"
        assert source.status().observations == 1
        assert source.counters == Counters(dirty=92, writeback=0, dirtied=1000, written=908)
    assert checker.other == []
    status = source.status()
    assert status.name == "writeback"
    assert not status.active
    assert status.errors == 0


async def test_dirtying_alone_wakes_nobody(fake: FakeProcfs, checker: RecordingChecker) -> None:
    async with running(source_on(fake, checker)) as source:
        await polls(source, 2)
        fake.change(dirty=50, dirtied=50)
        await polls(source, 5)
        fake.change(dirty=1, dirtied=1)
        await polls(source, 5)
        assert checker.dirty_checks == 0
        assert source.status().observations == 0
        # Writeback starting (dirty pages turned writeback) is progress.
        fake.change(dirty=-20, writeback=20)
        await wait_until(lambda: checker.dirty_checks == 1)


async def test_old_layout_temp_pages_finishing_wake_the_checker(
    tmp_path: Path, checker: RecordingChecker
) -> None:
    fake = FakeProcfs(tmp_path / "proc", old_layout=True)
    fake.set(dirty=100, writeback=0, temp=30, dirtied=1000, written=900)
    async with running(source_on(fake, checker)) as source:
        await polls(source, 2)
        assert source.counters is not None
        assert source.counters.writeback == 30
        fake.change(temp=-30)
        await wait_until(lambda: checker.dirty_checks == 1)


async def test_without_a_checker_the_source_only_counts(fake: FakeProcfs) -> None:
    async with running(source_on(fake, None)) as source:
        await polls(source, 2)
        fake.change(written=1)
        await wait_until(lambda: source.status().observations == 1)


async def test_malformed_files_are_counted_and_polling_goes_on(
    fake: FakeProcfs, checker: RecordingChecker
) -> None:
    async with running(source_on(fake, checker)) as source:
        await polls(source, 2)
        fake.write("vmstat", b"nr_dirty 1\ngarbage")
        fake.write("meminfo", b"\x00\xff")
        await wait_until(lambda: source.status().errors >= 4)
        status = source.status()
        assert status.active
        assert status.last_error is not None
        assert "meminfo: Dirty: is missing" in status.last_error
        fake.change(written=5)  # both files good again, and writeback progressed
        await wait_until(lambda: checker.dirty_checks == 1)
        errors = source.status().errors
        await polls(source, 3)
        assert source.status().errors == errors


async def test_meminfo_stands_in_for_a_broken_vmstat(
    fake: FakeProcfs, checker: RecordingChecker
) -> None:
    async with running(source_on(fake, checker)) as source:
        await polls(source, 2)
        fake.write("vmstat", b"nr_dirty oops\n")
        await polls(source, 3)
        assert source.status().errors >= 3
        error = source.status().last_error
        assert error == f"{fake.root}/vmstat: nr_dirty is not a number: 'oops'"
        assert checker.dirty_checks == 0  # meminfo still says nothing moved
        fake.change(dirty=-10, written=10)
        good_vmstat = (fake.root / "vmstat").read_bytes()
        fake.write("vmstat", b"nr_dirty oops\n")
        await wait_until(lambda: checker.dirty_checks == 1)  # the meminfo gauge fell
        # vmstat comes back: what completed while it was broken is not lost.
        fake.write("vmstat", good_vmstat)
        await wait_until(lambda: checker.dirty_checks == 2)
        await polls(source, 3)
        assert checker.dirty_checks == 2


async def test_an_unreadable_file_is_an_error_and_is_reopened(
    fake: FakeProcfs, checker: RecordingChecker
) -> None:
    vmstat = fake.root / "vmstat"
    data = vmstat.read_bytes()
    vmstat.unlink()
    vmstat.mkdir()  # opens, but every read fails
    async with running(source_on(fake, checker)) as source:
        await polls(source, 2)
        assert source.status().last_error == f"{vmstat}: Is a directory"
        vmstat.rmdir()
        vmstat.write_bytes(data)
        await wait_until(lambda: written(source) == 900)  # the fd was closed and reopened
        errors = source.status().errors
        await polls(source, 3)
        assert source.status().errors == errors
        assert checker.dirty_checks == 0
        fake.change(written=1)
        await wait_until(lambda: checker.dirty_checks == 1)


class MustNotStart:
    """A task status that fails the test if the source reports itself started."""

    def started(self, value: None = None) -> None:
        pytest.fail("the source started without its counters")


async def test_missing_procfs_root_is_unavailable(tmp_path: Path) -> None:
    source = WritebackSource(make_sink(None), procfs=str(tmp_path / "nowhere"))
    with pytest.raises(SourceUnavailable, match=r"nowhere.*not a directory"):
        await source.run(task_status=MustNotStart())
    assert not source.status().active


async def test_procfs_without_counter_files_is_unavailable(tmp_path: Path) -> None:
    source = WritebackSource(make_sink(None), procfs=str(tmp_path))
    with pytest.raises(SourceUnavailable, match=r"vmstat.*meminfo"):
        await source.run(task_status=MustNotStart())


async def test_only_meminfo_is_enough_to_start(fake: FakeProcfs, checker: RecordingChecker) -> None:
    (fake.root / "vmstat").unlink()
    async with running(source_on(fake, checker)) as source:
        assert source.status().errors >= 1
        assert "vmstat" in (source.status().last_error or "")
        await polls(source, 2)
        fake.change(dirty=-1)
        await wait_until(lambda: checker.dirty_checks == 1)


async def test_polls_only_while_a_scope_is_watched(
    fake: FakeProcfs, checker: RecordingChecker
) -> None:
    source = WritebackSource(make_sink(checker), poll=0.005, procfs=str(fake.root))
    async with running(source):
        for _ in range(5):
            await anyio.sleep(0.005)  # several poll intervals pass with nothing to watch
        assert source.status().passes == 0
        source.add_scope("/a")
        source.add_scope("/a")
        await polls(source, 2)
        source.remove_scope("/a")
        await polls(source, 2)  # still watched once
        source.remove_scope("/a")
        await wait_until(lambda: source.counters is None)
        passes = source.status().passes
        fake.change(written=4)  # progress while nothing is watched is nobody's business
        source.add_scope("/b")
        await polls(source, 3)
        assert source.status().passes > passes
        assert checker.dirty_checks == 0


def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll"):
        WritebackSource(make_sink(None), poll=0)


# -- the real kernel -----------------------------------------------------------------------


def write_and_fsync(path: Path, pages: int) -> None:
    with path.open("wb") as f:
        f.write(os.urandom(pages * _kernel.PAGE_SIZE))
        f.flush()
        os.fsync(f.fileno())
        assert _kernel.cachestat(f.fileno()).dirty == 0  # independent check: all written back


def written(source: WritebackSource) -> int:
    counters = source.counters
    return 0 if counters is None or counters.written is None else counters.written


@pytest.mark.kernel
async def test_real_writeback_on_ext4_wakes_the_checker(
    ext4_dir: Path, checker: RecordingChecker
) -> None:
    source = WritebackSource(make_sink(checker))
    source.add_scope(str(ext4_dir))
    async with running(source):
        await wait_until(lambda: source.counters is not None)
        before = source.counters
        assert before is not None
        assert before.written is not None
        assert source.status().errors == 0
        calls = checker.dirty_checks
        pages = 256
        write_and_fsync(ext4_dir / "file", pages)
        # Per-CPU deltas reach the global counters within vm.stat_interval (1 s).
        target = before.written + pages
        await wait_until(lambda: written(source) >= target and checker.dirty_checks > calls, 10)
    assert source.status().errors == 0
