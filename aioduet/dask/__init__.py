"""Cache-aware task placement on Dask distributed (``pip install 'aioduet[dask]'``).

Duet's follow-up, Quartet (HotStorage'16), placed Hadoop and Spark tasks where their input
was already in a node's page cache. This package does the same for Dask: every worker runs
an aioduet task over its data directory and reports a bounded summary of what it has cached
(:class:`ResidencySummary`) to a board on the scheduler; :func:`cache_aware_map` asks the
board which worker caches most of each task's input and places the task there, leaving the
rest to Dask::

    from distributed import Client
    import aioduet.dask

    client = Client("tcp://scheduler:8786")
    aioduet.dask.install(client, "/data")                 # every worker watches its /data
    futures = aioduet.dask.cache_aware_map(client, checksum, ["part-0001", "part-0002"])

See docs/dask.md for what runs where and what it costs.
"""

from ..errors import NotInstalled as NotInstalled
from ._map import Input as Input
from ._map import board as board
from ._map import cache_aware_map as cache_aware_map
from ._map import cache_aware_map_async as cache_aware_map_async
from ._map import install as install
from ._map import plan as plan
from ._monitor import ResidencyMonitor as ResidencyMonitor
from ._placement import best_workers as best_workers
from ._plugins import ResidencyBoard as ResidencyBoard
from ._plugins import ResidencyReporter as ResidencyReporter
from ._summary import ResidencySummary as ResidencySummary

__all__ = [
    "Input",
    "NotInstalled",
    "ResidencyBoard",
    "ResidencyMonitor",
    "ResidencyReporter",
    "ResidencySummary",
    "best_workers",
    "board",
    "cache_aware_map",
    "cache_aware_map_async",
    "install",
    "plan",
]
