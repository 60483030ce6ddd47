"""Views of the page cache over time: residency maps, recordings, heatmaps and ``top``.

The command line's ``top``, ``record`` and ``report`` are built from these, and a notebook
can use them directly (see ``examples/explore.ipynb``).
"""

from ._heatmap import FileSpan as FileSpan
from ._heatmap import Heatmap as Heatmap
from ._heatmap import heatmap as heatmap
from ._heatmap import heatmap_figure as heatmap_figure
from ._heatmap import heatmap_text as heatmap_text
from ._heatmap import save_heatmap as save_heatmap
from ._record import FileSample as FileSample
from ._record import Frame as Frame
from ._record import Header as Header
from ._record import RecordedFile as RecordedFile
from ._record import Recording as Recording
from ._record import RecordWriter as RecordWriter
from ._record import read_recording as read_recording
from ._recorder import FrameSummary as FrameSummary
from ._recorder import RecordSummary as RecordSummary
from ._recorder import record as record
from ._reports import FileReport as FileReport
from ._reports import WorkingSet as WorkingSet
from ._reports import file_reports as file_reports
from ._reports import working_set as working_set
from ._residency import Activity as Activity
from ._residency import FileResidency as FileResidency
from ._residency import ResidencyView as ResidencyView

__all__ = [
    "Activity",
    "FileReport",
    "FileResidency",
    "FileSample",
    "FileSpan",
    "Frame",
    "FrameSummary",
    "Header",
    "Heatmap",
    "RecordSummary",
    "RecordWriter",
    "RecordedFile",
    "Recording",
    "ResidencyView",
    "WorkingSet",
    "file_reports",
    "heatmap",
    "heatmap_figure",
    "heatmap_text",
    "read_recording",
    "record",
    "save_heatmap",
    "working_set",
]

# top: the model and rendering of `aioduet top`
from ._top import TopModel as TopModel
from ._top import TopRow as TopRow
from ._top import TopSnapshot as TopSnapshot
from ._top import TopTotals as TopTotals
from ._top import render as render_top

__all__ += ["TopModel", "TopRow", "TopSnapshot", "TopTotals", "render_top"]
