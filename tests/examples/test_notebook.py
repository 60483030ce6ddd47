"""examples/explore.ipynb, executed headless: its items table, its heatmap, and fincore's word.

The notebook reads, evicts and records files of its own under /tmp; its last check compares
what the recording says is cached at its end with fincore(1)'s count (the independent oracle),
and this test reads that table back rather than trusting the notebook's own assert.
"""

from __future__ import annotations

import base64
import glob
import io
import os
import shutil
from pathlib import Path

import matplotlib.image
import nbclient
import nbformat
import pytest

pytestmark = pytest.mark.kernel  # and util-linux's fincore, the notebook's oracle

REPO = Path(__file__).resolve().parent.parent.parent
NOTEBOOK = REPO / "examples" / "explore.ipynb"
WORKSPACES = "/tmp/aioduet-explore-*"  # what the notebook makes (and removes at its end)
PAGE = os.sysconf("SC_PAGE_SIZE")


def tagged(notebook: nbformat.NotebookNode, tag: str) -> nbformat.NotebookNode:
    [cell] = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    return cell


def results(cell: nbformat.NotebookNode) -> list[dict[str, str]]:
    """The data of a code cell's rich outputs (execute_result and display_data)."""
    return [
        o["data"] for o in cell.outputs if o["output_type"] in {"execute_result", "display_data"}
    ]


def test_the_notebook_is_saved_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_notebook_runs_and_agrees_with_fincore(
    ext4_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the kernel inherits the environment: it imports this checkout's aioduet
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(ext4_dir)}},
    )
    before = set(glob.glob(WORKSPACES))
    try:
        client.execute()  # CellExecutionError if a cell raised
    finally:
        for left in set(glob.glob(WORKSPACES)) - before:  # the notebook stopped before its end
            shutil.rmtree(left, ignore_errors=True)
    errors = [
        o for c in notebook.cells for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert not errors

    # the items of the workload, as a table (a DataFrame: text/html and text/plain)
    [table] = results(tagged(notebook, "items"))
    assert {"text/html", "text/plain"} <= set(table)
    assert "a.bin" in table["text/plain"] and "b.bin" in table["text/plain"]
    assert "a.bin" in table["text/html"]

    # the heatmap, drawn inline
    [figure] = results(tagged(notebook, "heatmap"))
    png = base64.b64decode(figure["image/png"])
    height, width, _ = matplotlib.image.imread(io.BytesIO(png), format="png").shape
    assert height > 200 and width > 400

    # what the recording says is cached at its end, against fincore just after it
    [check] = results(tagged(notebook, "check"))
    header, *lines = check["text/plain"].splitlines()
    assert header.split() == ["recorded", "fincore"]
    rows = {
        name: (int(recorded), int(fincore)) for name, recorded, fincore in map(str.split, lines)
    }
    assert set(rows) == {"a.bin", "b.bin", "c.bin"}
    assert all(recorded == fincore for recorded, fincore in rows.values()), rows
    assert rows["b.bin"] == (2 * (1 << 20) // PAGE,) * 2, rows  # read whole: all cached
    assert rows["a.bin"] == (0, 0), rows  # half read, then evicted
