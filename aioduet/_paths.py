"""The inode-to-path index behind relevance and ``get_path``.

Sources feed it with the paths they walk or are told about; the store asks it, through the
framework, whether a file lies under a task's root. Paths are compared by whole components:
``/d/a`` is not under ``/d/ab``.
"""

from __future__ import annotations

import fnmatch
import os
import re

import attrs

__all__ = ["Exclusions", "PathHint", "PathHints", "PathIndex", "is_under", "normalize_root"]


def normalize_root(path: str | os.PathLike[str]) -> str:
    """The canonical form of a registered directory: absolute, symlinks resolved, no trailing /."""
    return os.path.realpath(os.fspath(path))


def is_under(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies below it, comparing whole path components."""
    if root == "/":
        return path.startswith("/")
    return path == root or (path.startswith(root) and path[len(root)] == "/")


_MEMO_SIZE = 1 << 16
"""Answers :meth:`Exclusions.remembered` keeps."""


@attrs.frozen
class Exclusions:
    """Paths that no source watches: glob patterns matched against a path or its last part.

    ``Exclusions(("*.tmp", "/data/cache", ".git"))`` excludes every ``.tmp`` file, the
    directory ``/data/cache`` (and so the tree below it, which is never entered) and every
    ``.git`` directory. Patterns use :mod:`fnmatch` syntax, case-sensitively; ``*`` matches
    ``/`` too. The patterns are compiled into one regular expression.
    """

    patterns: tuple[str, ...] = ()
    _regex: re.Pattern[str] | None = attrs.field(init=False, eq=False, repr=False)
    _memo: dict[str, bool] = attrs.field(init=False, eq=False, repr=False, factory=dict)

    @_regex.default
    def _compile(self) -> re.Pattern[str] | None:
        if not self.patterns:
            return None
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in self.patterns))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def covers(self, path: str, root: str) -> bool:
        """Whether ``path`` or a directory between it and ``root`` is excluded."""
        if self._regex is None:
            return False
        while path != root and is_under(path, root):
            if self(path):
                return True
            path = path.rpartition("/")[0] or "/"
        return False

    def remembered(self, path: str) -> bool:
        """:meth:`__call__`, remembering up to 65,536 answers (for event streams, which name
        the same paths over and over); the memory is emptied when it is full."""
        if self._regex is None:
            return False
        memo = self._memo
        hit = memo.get(path)
        if hit is None:
            if len(memo) >= _MEMO_SIZE:
                memo.clear()
            hit = memo[path] = self(path)
        return hit

    def __call__(self, path: str) -> bool:
        """Whether ``path`` (absolute, normalised) is excluded."""
        regex = self._regex
        if regex is None:
            return False
        return regex.match(path) is not None or regex.match(path.rpartition("/")[2]) is not None


@attrs.define(eq=False)
class PathIndex:
    """Maps ``(dev, ino)`` to the paths a file is known by (more than one for hard links)."""

    _paths: dict[tuple[int, int], str | frozenset[str]] = attrs.field(factory=dict)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, inode: object) -> bool:
        """Whether a path of ``(dev, ino)`` is known."""
        return inode in self._paths

    def add(self, dev: int, ino: int, path: str, nlink: int = 1) -> bool:
        """Record that the file is reachable at ``path``; True when its known paths changed.

        With a single link, a different path replaces the old one (a rename); with several,
        paths accumulate.
        """
        key = (dev, ino)
        old = self._paths.get(key)
        if old is None:
            self._paths[key] = path
            return True
        if old == path or (isinstance(old, frozenset) and path in old):
            return False
        if nlink <= 1:
            self._paths[key] = path
        elif isinstance(old, frozenset):
            self._paths[key] = old | {path}
        else:
            self._paths[key] = frozenset((old, path))
        return True

    def discard(self, dev: int, ino: int, path: str | None = None) -> None:
        """Forget one path of the file, or all of them."""
        key = (dev, ino)
        old = self._paths.get(key)
        if old is None:
            return
        if path is None or old == path:
            del self._paths[key]
        elif isinstance(old, frozenset) and path in old:
            rest = old - {path}
            self._paths[key] = next(iter(rest)) if len(rest) == 1 else rest

    def paths(self, dev: int, ino: int) -> tuple[str, ...]:
        """The known paths of the file (empty when unknown)."""
        found = self._paths.get((dev, ino))
        if found is None:
            return ()
        if isinstance(found, str):
            return (found,)
        return tuple(sorted(found))

    def under(self, dev: int, ino: int, root: str) -> bool | None:
        """Whether the file is known under ``root``; None when no path of it is known."""
        found = self._paths.get((dev, ino))
        if found is None:
            return None
        if isinstance(found, str):
            return is_under(found, root)
        return any(is_under(path, root) for path in found)


PathHint = tuple[str, int, int]
"""``(path, generation, ctime_ns)``: where and as what a walk saw a file."""


@attrs.define(eq=False)
class PathHints:
    """Where a walk last saw files that the index does not hold (they were not cached).

    The exact source names inodes, not paths. For an inode the index lacks, a hint from the
    registration scan is a far cheaper start than a file handle: one ``stat`` of the hinted
    path that finds the same inode with the same change time confirms the path and the
    generation (a stale hint only costs that try). Bounded: past ``limit`` entries the
    oldest hints go. A hint is used once: :meth:`take` removes it.
    """

    limit: int = attrs.field(default=1 << 18, validator=attrs.validators.ge(1))
    _hints: dict[tuple[int, int], PathHint] = attrs.field(init=False, factory=dict)

    def __len__(self) -> int:
        return len(self._hints)

    def add(self, dev: int, ino: int, hint: PathHint) -> None:
        """Remember that a walk saw ``(dev, ino)`` as ``hint``."""
        hints = self._hints
        hints.pop((dev, ino), None)  # re-inserted as the newest
        if len(hints) >= self.limit:
            del hints[next(iter(hints))]
        hints[(dev, ino)] = hint

    def take(self, dev: int, ino: int) -> PathHint | None:
        """The hint for ``(dev, ino)``, removed from the hints; None without one."""
        return self._hints.pop((dev, ino), None)
