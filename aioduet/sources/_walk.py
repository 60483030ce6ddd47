"""A resumable walk of directory trees that counts the kernel calls it makes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import attrs

__all__ = ["Walk"]


def _never(path: str) -> bool:
    return False


@attrs.define(eq=False)
class Walk:
    """Regular files under some roots, each on its root's filesystem (like ``find -xdev``).

    Iterating yields ``(path, inode number, device)``; the device is the root's, since the
    walk never leaves it. Symlinks are not followed, so loops cannot trap it; entries that
    vanish and directories that cannot be read are skipped (the latter listed in
    :attr:`denied`). The walk can stop after any file and go on later, from another
    thread too (never from two at once). :attr:`cost` counts its kernel calls: one per
    directory listed and one per subdirectory (its device is checked).
    """

    roots: Iterable[str]
    excluded: Callable[[str], bool] = _never
    cost: int = 0
    denied: list[str] = attrs.field(factory=list)
    """Directories that could not be listed since the caller last emptied this list."""
    _files: Iterator[tuple[str, int, int]] | None = attrs.field(default=None, init=False)

    def __iter__(self) -> Iterator[tuple[str, int, int]]:
        if self._files is None:
            self._files = self._generate()
        return self._files

    def _generate(self) -> Iterator[tuple[str, int, int]]:
        excluded = self.excluded
        for root in self.roots:
            try:
                device = os.stat(root).st_dev
            except OSError:
                continue
            self.cost += 1
            stack = [root]
            while stack:
                self.cost += 1
                directory = stack.pop()
                try:
                    scanner = os.scandir(directory)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except PermissionError:
                    self.denied.append(directory)
                    continue
                # The listing is read in full before any file is yielded: a walk suspended
                # between two files (or abandoned) must not hold a directory fd open.
                with scanner:
                    entries = list(scanner)
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            self.cost += 1
                            if entry.stat(follow_symlinks=False).st_dev == device and not (
                                excluded(entry.path)
                            ):
                                stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False) and not excluded(entry.path):
                            yield entry.path, entry.inode(), device
                    except OSError:
                        continue
