"""The event store: merges observations per page and routes them to task slots.

It imports nothing from :mod:`aioduet.sources` or :mod:`aioduet.tasks`.
"""

from ._slots import effective_mask
from ._table import FileEntry, Key, Observation, Run, Store, StoreStatistics

__all__ = ["FileEntry", "Key", "Observation", "Run", "Store", "StoreStatistics", "effective_mask"]
