"""A client that is not root, served by a root daemon: what it may watch, see and do.

The client runs as ``nobody`` (uid and gid 65534, no supplementary groups) in a forked child
of this process: the Python installation lives under /root (mode 0700), so a fresh
interpreter could not start as nobody, but a fork keeps what is already imported. The child
talks to the daemon with :func:`aioduet.connect` (or a raw socket) and sends back what
happened; the daemon checks it by ``SO_PEERCRED``, exactly as it would any other process.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from daemonproc import DaemonProcess, call, raw_connect
from nobody import NOBODY, as_nobody
from pagecache import cached, read_pages, uuid_of, write_clean
from taskitems import collect, has, pages

import aioduet
from aioduet import Event, Uuid

pytestmark = [
    pytest.mark.anyio,
    # Each test forks a client process and starts a daemon: one loop is enough here.
    pytest.mark.parametrize("anyio_backend", ["asyncio"]),
]

DATA_PAGES = 32


# -- a client as nobody ------------------------------------------------------------------


async def outcome(awaitable: Awaitable[object]) -> dict[str, str]:
    """What an awaitable raised (as names and messages a pipe can carry), or its result."""
    try:
        result = await awaitable
    except Exception as exc:
        return {"raised": type(exc).__name__, "message": str(exc)}
    return {"returned": repr(result)}


# -- the directory tree ------------------------------------------------------------------


class Tree:
    """Directories under a fresh ext4 directory that nobody may or may not reach::

    top/ 0755
      shared/ 0755          nobody's task root
        data 0644           DATA_PAGES pages, clean
        locked/ 0700        root's only
          hidden 0644
      private/ 0700         nobody cannot open it
      outside/ 0755
        rootfile 0600       root's, outside nobody's root
      rootdir/ 0755         root's own task
    """

    def __init__(self, top: Path) -> None:
        top.chmod(0o755)
        self.shared = top / "shared"
        self.data = write_clean(self.shared / "data", DATA_PAGES)
        self.locked = self.shared / "locked"
        self.hidden = write_clean(self.locked / "hidden", 4)
        self.private = top / "private"
        write_clean(self.private / "x", 1)
        self.rootfile = write_clean(top / "outside" / "rootfile", 4)
        self.rootdir = top / "rootdir"
        write_clean(self.rootdir / "y", 1)
        for directory in (self.shared, top / "outside", self.rootdir):
            directory.chmod(0o755)
        self.data.chmod(0o644)
        self.hidden.chmod(0o644)
        self.rootfile.chmod(0o600)
        for directory in (self.locked, self.private):
            directory.chmod(0o700)


@pytest.fixture
def tree(ext4_dir: Path) -> Tree:
    return Tree(ext4_dir)


@pytest.fixture
def quota_daemon(spawn: Callable[..., DaemonProcess]) -> DaemonProcess:
    return spawn("--sources", "scan", "--interval", "0.05", "--tasks-per-uid", "2")


# -- scenarios (run as nobody) -------------------------------------------------------------


def read_all(path: str) -> None:
    with open(path, "rb", buffering=0) as file:
        os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # no readahead beyond
        while file.read(1 << 16):
            pass


async def read_and_collect(
    socket_path: str, root: str, data: str, key: list[int]
) -> dict[str, Any]:
    uuid = Uuid(*key)
    async with (
        aioduet.connect(socket_path) as client,
        client.register("nobody-reads", Event.ADDED, root) as task,
    ):
        await task.wait_scanned()
        read_all(data)  # cachestat would refuse nobody (EPERM): the test counts afterwards
        items = await collect(task, lambda got: len(pages(got, uuid, Event.ADDED)) >= DATA_PAGES)
        return {
            "pages": sorted(pages(items, uuid, Event.ADDED)),
            "path": await task.get_path(uuid),
        }


async def register_unopenable(socket_path: str, root: str) -> dict[str, str]:
    async with aioduet.connect(socket_path) as client:
        return await outcome(client.register("nobody-pries", Event.ADDED, root))


async def get_paths(socket_path: str, root: str, keys: dict[str, list[int]]) -> dict[str, Any]:
    async with (
        aioduet.connect(socket_path) as client,
        client.register("nobody-asks", Event.ADDED, root) as task,
    ):
        return {name: await outcome(task.get_path(Uuid(*key))) for name, key in keys.items()}


async def own_status(socket_path: str, root: str) -> dict[str, Any]:
    async with (
        aioduet.connect(socket_path) as client,
        client.register("nobody-own", Event.ADDED, root) as task,
    ):
        status = await client.status()
        return {"mine": task.id, "listed": [(t.id, t.name, t.path) for t in status.tasks]}


async def try_shutdown(socket_path: str) -> dict[str, Any]:
    async with aioduet.connect(socket_path) as client:
        refused = await outcome(client.shutdown())
        still = await client.status()  # the connection stays usable after the refusal
        return {"shutdown": refused, "running": still.running}


async def register_three(socket_path: str, root: str) -> dict[str, Any]:
    async with aioduet.connect(socket_path) as client:
        first = await client.register("one", Event.ADDED, root)
        second = await client.register("two", Event.ADDED, root)
        third = await outcome(client.register("three", Event.ADDED, root))
        await first.aclose()
        fourth = await outcome(client.register("four", Event.ADDED, root))  # room again
        await second.aclose()
        return {"third": third, "fourth": fourth}


async def register_o_path(socket_path: str, root: str) -> dict[str, Any]:
    # O_PATH needs no permission on the directory itself: exactly what must not be enough.
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with raw_connect(socket_path) as sock:
            hello = call(sock, json_hello())
            register = {"op": "register", "name": "o-path", "mask": 1, "id": 3}
            refused = call(sock, register, [fd])
            after = call(sock, {"op": "status", "id": 4})
    finally:
        os.close(fd)
    return {"hello": "ok" in hello, "refused": refused, "after": "ok" in after}


# -- tests -----------------------------------------------------------------------------------


async def test_nobody_gets_added_pages_of_a_directory_it_can_read(
    quota_daemon: DaemonProcess, tree: Tree
) -> None:
    result = await as_nobody(
        read_and_collect,
        quota_daemon.socket_path,
        str(tree.shared),
        str(tree.data),
        list(uuid_of(tree.data).key),
    )
    assert cached(tree.data) == DATA_PAGES  # what nobody's read brought in: all of it
    assert result["pages"] == list(range(DATA_PAGES))
    assert result["path"] == str(tree.data)


async def test_nobody_cannot_register_a_directory_it_cannot_open(
    quota_daemon: DaemonProcess, tree: Tree
) -> None:
    result = await as_nobody(register_unopenable, quota_daemon.socket_path, str(tree.private))
    assert result["raised"] == "PermissionError", result
    assert f"cannot open {tree.private}" in result["message"]
    assert "Permission denied" in result["message"]
    async with aioduet.connect(quota_daemon.socket_path) as root:
        assert (await root.status()).tasks == ()


async def test_o_path_descriptor_does_not_prove_read_access(
    quota_daemon: DaemonProcess, tree: Tree
) -> None:
    result = await as_nobody(register_o_path, quota_daemon.socket_path, str(tree.private))
    assert result["hello"]
    assert result["refused"]["error"]["code"] == "permission", result
    assert "not opened for reading" in result["refused"]["error"]["message"]
    assert result["after"]  # an answer, not a hang-up
    async with aioduet.connect(quota_daemon.socket_path) as root:
        assert (await root.status()).tasks == ()


async def test_o_path_descriptor_is_refused_for_root_too(
    quota_daemon: DaemonProcess, tree: Tree
) -> None:
    fd = os.open(tree.shared, os.O_PATH | os.O_DIRECTORY)
    try:
        with raw_connect(quota_daemon.socket_path) as sock:
            assert "ok" in call(sock, json_hello())
            reply = call(sock, {"op": "register", "name": "p", "mask": 1, "id": 2}, [fd])
    finally:
        os.close(fd)
    assert reply["error"]["code"] == "permission", reply


def json_hello() -> dict[str, Any]:
    return {"op": "hello", "version": 1, "id": 1}


async def test_nobody_gets_no_path_outside_its_root_or_behind_a_locked_directory(
    quota_daemon: DaemonProcess, tree: Tree
) -> None:
    keys = {
        "data": list(uuid_of(tree.data).key),
        "hidden": list(uuid_of(tree.hidden).key),
        "rootfile": list(uuid_of(tree.rootfile).key),
    }
    # Root's own task proves the daemon knows the locked file's path: nobody's refusal
    # below is the permission check, not ignorance.
    async with (
        aioduet.connect(quota_daemon.socket_path) as root,
        root.register("root-asks", Event.ADDED, tree.shared) as task,
    ):
        await task.wait_scanned()
        hidden, data = uuid_of(tree.hidden), uuid_of(tree.data)
        read_pages(tree.hidden)
        read_pages(tree.data)  # the daemon learns paths from what it sees
        await collect(
            task, lambda got: has(got, hidden, Event.ADDED) and has(got, data, Event.ADDED)
        )
        assert await task.get_path(hidden) == str(tree.hidden)
        result = await as_nobody(get_paths, quota_daemon.socket_path, str(tree.shared), keys)
    assert result["data"] == {"returned": repr(str(tree.data))}
    assert result["hidden"]["raised"] == "NotFound", result
    assert result["rootfile"]["raised"] == "NotFound", result
    for refused in (result["hidden"], result["rootfile"]):
        assert str(tree.locked) not in refused["message"]
        assert str(tree.rootfile) not in refused["message"]


async def test_nobody_sees_only_its_own_tasks(quota_daemon: DaemonProcess, tree: Tree) -> None:
    async with (
        aioduet.connect(quota_daemon.socket_path) as root,
        root.register("root-task", Event.ADDED, tree.rootdir) as rooted,
    ):
        result = await as_nobody(own_status, quota_daemon.socket_path, str(tree.shared))
        assert result["listed"] == [(result["mine"], "nobody-own", str(tree.shared))]
        # Root sees every task, its own included (nobody's is gone once its client left).
        listed = {task.id for task in (await root.status()).tasks}
        assert rooted.id in listed
        assert rooted.id != result["mine"]


async def test_nobody_may_not_stop_the_daemon(quota_daemon: DaemonProcess) -> None:
    result = await as_nobody(try_shutdown, quota_daemon.socket_path)
    assert result["shutdown"]["raised"] == "PermissionError", result
    assert f"user {NOBODY} may not stop the daemon" in result["shutdown"]["message"]
    assert result["running"]
    assert quota_daemon.proc.poll() is None
    async with aioduet.connect(quota_daemon.socket_path) as root:
        assert (await root.status()).running
    assert quota_daemon.proc.poll() is None


async def test_per_uid_quota(quota_daemon: DaemonProcess, tree: Tree) -> None:
    result = await as_nobody(register_three, quota_daemon.socket_path, str(tree.shared))
    assert result["third"]["raised"] == "TooManyTasks", result
    assert f"user {NOBODY} holds 2 tasks already" in result["third"]["message"]
    assert "returned" in result["fourth"], result
    # Root is not bound by the quota.
    async with aioduet.connect(quota_daemon.socket_path) as root:
        tasks = [await root.register(f"root{n}", Event.ADDED, tree.rootdir) for n in range(3)]
        assert len({task.id for task in tasks}) == 3
