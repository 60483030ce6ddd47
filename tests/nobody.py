"""Run an async scenario in a forked child process as the user nobody (no privileges).

Root bypasses permission bits, so tests of what an unprivileged user gets (EACCES, the
daemon's checks of its peers) run their scenario in a child that dropped to nobody.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio._backends._asyncio  # imported before the fork: nobody may not read it later

NOBODY = 65534

Scenario = Callable[..., Awaitable[object]]


def _child(conn: Any, scenario: Scenario, args: tuple[object, ...]) -> None:
    try:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        assert os.getresuid() == (NOBODY,) * 3
        conn.send(("ok", anyio.run(scenario, *args, backend="asyncio")))
    except BaseException as exc:  # sent to the test, which fails with it
        conn.send(("raised", f"{type(exc).__name__}: {exc}"))


def _fork(scenario: Scenario, args: tuple[object, ...], seconds: float) -> Any:
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, scenario, args))
    child.start()
    sender.close()
    try:
        if not receiver.poll(seconds):
            raise AssertionError(f"the scenario as nobody did not finish within {seconds} s")
        status, result = receiver.recv()
    finally:
        if child.is_alive() and child.pid is not None:
            os.kill(child.pid, 9)
        child.join(10)
        child.close()
        receiver.close()
    if status != "ok":
        raise AssertionError(f"the scenario as nobody failed: {result}")
    return result


async def as_nobody(scenario: Scenario, *args: object, seconds: float = 40) -> Any:
    """Run ``scenario(*args)`` in a child process as nobody; return what it returns."""
    return await anyio.to_thread.run_sync(_fork, scenario, args, seconds)
