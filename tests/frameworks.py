"""The same tests against an embedded framework and against a daemon serving one.

``frameworks.open(...)`` takes ``open_duet``'s arguments and gives an :class:`aioduet.abc.Duet`:
the embedded framework itself, or a client connected over a Unix socket to a daemon serving
such a framework in this process. ``frameworks.embedded`` is the embedded framework either way,
for tests that look at (or poke) the store behind the interface.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioduet
import aioduet.abc
from aioduet.daemon import serve


class Frameworks:
    """Opens frameworks of one kind: ``"embedded"`` or ``"daemon"``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._embedded: aioduet.Duet | None = None

    @property
    def embedded(self) -> aioduet.Duet:
        """The embedded framework behind the last ``open()``."""
        assert self._embedded is not None, "open() a framework first"
        return self._embedded

    @contextlib.asynccontextmanager
    async def open(self, *args: Any, **kwargs: Any) -> AsyncIterator[aioduet.abc.Duet]:
        async with aioduet.open_duet(*args, **kwargs) as duet:
            self._embedded = duet
            if self.kind == "embedded":
                yield duet
                return
            with tempfile.TemporaryDirectory(prefix="aioduet-sock-") as where:
                path = str(Path(where) / "d.sock")
                async with serve(duet, path), aioduet.connect(path) as client:
                    yield client
