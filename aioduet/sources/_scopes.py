"""The directories a source watches, counted: two tasks may register the same one."""

from __future__ import annotations

from collections.abc import Iterator

import attrs

from .._paths import is_under

__all__ = ["Scopes"]


@attrs.define(eq=False)
class Scopes:
    """Registered roots with the number of registrations of each."""

    _counts: dict[str, int] = attrs.field(factory=dict)

    def add(self, root: str) -> bool:
        """Count a registration of ``root``; True when it was not watched before."""
        count = self._counts.get(root, 0)
        self._counts[root] = count + 1
        return count == 0

    def remove(self, root: str) -> bool:
        """Count a deregistration; True when the last registration of ``root`` left."""
        left = self._counts.get(root, 0) - 1
        if left > 0:
            self._counts[root] = left
            return False
        return self._counts.pop(root, None) is not None

    def __contains__(self, root: object) -> bool:
        return root in self._counts

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._counts))

    def __len__(self) -> int:
        return len(self._counts)

    def outer(self) -> list[str]:
        """The roots that lie under no other root, sorted: each tree once."""
        roots = sorted(self._counts)
        return [r for r in roots if not any(o != r and is_under(r, o) for o in roots)]

    def cover(self, path: str) -> bool:
        """Whether ``path`` is one of the roots or lies below one."""
        return any(is_under(path, root) for root in self._counts)
