"""Views of the page cache over time: residency maps, recordings, heatmaps and ``top``.

The command line's ``top``, ``record`` and ``report`` are built from these, and a notebook
can use them directly (see ``examples/explore.ipynb``).
"""

from ._residency import Activity as Activity
from ._residency import FileResidency as FileResidency
from ._residency import ResidencyView as ResidencyView

__all__ = ["Activity", "FileResidency", "ResidencyView"]
