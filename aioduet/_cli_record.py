"""``aioduet record`` and ``aioduet report``: residency over time, and its heatmaps.

Imported when the parser is built: only light imports at the top (see ``_cli``).
"""

from __future__ import annotations

import argparse

__all__ = ["configure_record", "configure_report"]


def configure_record(parser: argparse.ArgumentParser) -> None:
    """Add record's own arguments (the framework and connect options are already there)."""


def configure_report(parser: argparse.ArgumentParser) -> None:
    """Add report's subcommands."""
