"""``aioduet top``: a live table of the most-cached and fastest-changing files.

Imported when the parser is built: only light imports at the top (see ``_cli``).
"""

from __future__ import annotations

import argparse

__all__ = ["configure"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add top's own arguments (the framework and connect options are already there)."""
