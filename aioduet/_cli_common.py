"""What the command line's modules share: argument types, running in an event loop, signals.

Imported when the parser is built, so only light imports at the top: anyio is imported
inside the functions that run a command.
"""

from __future__ import annotations

import argparse
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "at_least_one",
    "existing_directory",
    "existing_path",
    "in_loop",
    "int_at_least",
    "positive",
    "until_signal",
    "writable_file",
]


def existing_directory(text: str) -> str:
    """An argparse type: an existing directory, made absolute."""
    path = os.path.abspath(text)
    if not os.path.exists(path):
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    if not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path


def existing_path(text: str) -> str:
    """An argparse type: a path that ``stat`` finds (kept as given)."""
    try:
        os.stat(text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot scan {text!r}: {exc.strerror}") from None
    return text


def writable_file(text: str) -> str:
    """An argparse type: a file that can be created or replaced (its directory exists)."""
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"no such directory: {directory!r}")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write into {directory!r}")
    return text


def int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum`` (``why``: said when it is not)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}{why}, not {value}")
        return value

    return parse


at_least_one = int_at_least(1)


def positive(text: str) -> float:
    """An argparse type: a positive, finite number of seconds (or anything else)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def in_loop(
    function: Callable[[argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], int]:
    """Run an async command in an event loop (uvloop where installed)."""

    def run(args: argparse.Namespace) -> int:
        import anyio  # noqa: PLC0415 - not when the parser is built (module docstring)

        options: dict[str, Any] = {}
        try:
            import uvloop  # noqa: F401, PLC0415 - only probing whether it is installed
        except ImportError:
            pass
        else:
            options["use_uvloop"] = True
        return anyio.run(function, args, backend_options=options)

    return run


async def until_signal(action: Callable[[], object]) -> None:
    """Call ``action`` on the first SIGINT or SIGTERM (a scope's ``cancel``, say), then end."""
    import anyio  # noqa: PLC0415 - not when the parser is built (module docstring)

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            action()
            return
