"""Sizes for people: one way to print bytes, shared by every command and view."""

from __future__ import annotations

__all__ = ["format_size"]


def format_size(size: float) -> str:
    """Bytes, human-readable: ``"0 B"``, ``"512 B"``, ``"4.0 KiB"``, ``"1.5 MiB"``."""
    if size < 1024:
        return f"{size:.0f} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
