"""What the benchmark scripts share: progress on stderr, and sizes written like fio's."""

from __future__ import annotations

import argparse
import sys

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def log(message: str) -> None:
    """One line of progress on stderr (stdout carries the JSON)."""
    print(message, file=sys.stderr, flush=True)


def binary_size(text: str) -> int:
    """``4096``, ``8M``, ``1.5G``: bytes, in binary units (an argparse type).

    Raises:
        argparse.ArgumentTypeError: not a number with an optional K, M or G.
    """
    unit = text[-1:].upper() if text[-1:].isalpha() else ""
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"size must be a number with K, M or G, not {text!r}")
    try:
        return int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be a number, not {text!r}") from None
