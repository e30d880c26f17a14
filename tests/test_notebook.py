"""examples/mirror-and-host.ipynb runs from top to bottom in a headless Jupyter kernel, so it
cannot rot: its asserts are checked, and what it shows (the progress widget, the HTML tables,
the refused mirror sync) is there in the outputs.

The notebook is executed once, in memory (examples/ keeps its cleared outputs), by nbclient
in an IPython kernel of this very interpreter: a kernel spec written into a temporary
``JUPYTER_PATH`` names ``sys.executable``, so neither a user's own ``python3`` kernel nor
their IPython profile takes part.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "mirror-and-host.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

#: Appended to the executed copy only: which interpreter the kernel runs.
WHICH_PYTHON = "import sys\nprint(sys.executable)\nprint(sys.prefix)"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The kernel's Jupyter paths, working directory and ``TMPDIR``."""
    return tmp_path_factory.mktemp("notebook")


@pytest.fixture(scope="module")
def executed(tmp: Path) -> nbformat.NotebookNode:
    """The notebook after running every cell (a failing cell fails every test here)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(WHICH_PYTHON, id="which-python"))
    write_kernel_spec(tmp / "jupyter" / "kernels" / "python3")  # argv: sys.executable
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
        env.setenv("JUPYTER_RUNTIME_DIR", str(tmp / "runtime"))
        env.setenv("IPYTHONDIR", str(tmp / "ipython"))
        env.setenv("TMPDIR", str(tmp / "tmp"))  # where the notebook makes its directory
        for name in [n for n in os.environ if n.startswith("OCIMIRROR_")]:
            env.delenv(name)
        (tmp / "cwd").mkdir()
        (tmp / "tmp").mkdir()
        client = NotebookClient(
            nb,
            timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp / "cwd")}},
        )
        client.execute()
    return nb


def cell(nb: nbformat.NotebookNode, cell_id: str) -> Any:
    """The cell with this id."""
    found = [c for c in nb.cells if c.get("id") == cell_id]
    assert len(found) == 1, f"the notebook has no cell {cell_id!r}"
    return found[0]


def data(c: Any, mime: str) -> list[Any]:
    """Every output of a cell in this MIME type (display data and the cell's result)."""
    return [o["data"][mime] for o in c.outputs if mime in o.get("data", {})]


def stdout(c: Any) -> str:
    return "".join(o["text"] for o in c.outputs if o.get("name") == "stdout")


def widget_parts(nb: nbformat.NotebookNode, view: dict[str, Any]) -> list[dict[str, Any]]:
    """The models of a tqdm widget's parts (text, bar, text), from the stored widget state."""
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    box = state[view["model_id"]]["state"]
    return [state[child.removeprefix("IPY_MODEL_")] for child in box["children"]]


def widget_text(nb: nbformat.NotebookNode, view: dict[str, Any]) -> str:
    """The text a tqdm widget shows at the end: its HTML parts."""
    parts = widget_parts(nb, view)
    text = " ".join(p["state"]["value"] for p in parts if p["model_name"] == "HTMLModel")
    return text.replace("\u2007", " ")  # tqdm pads with figure spaces in a notebook


def widget_bar(nb: nbformat.NotebookNode, view: dict[str, Any]) -> tuple[float, float]:
    """(value, max) of a tqdm widget's progress bar."""
    (bar,) = [p["state"] for p in widget_parts(nb, view) if p["model_name"] == "FloatProgressModel"]
    return bar["value"], bar["max"]


def test_the_committed_notebook_is_valid_and_has_no_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    for c in code:
        assert c.outputs == [] and c.execution_count is None, f"cell {c.id} has outputs"
    assert nb.cells[0].cell_type == "markdown"


def test_the_kernel_runs_this_python(executed: nbformat.NotebookNode) -> None:
    assert stdout(cell(executed, "which-python")).split() == [sys.executable, sys.prefix]


def test_no_cell_failed(executed: nbformat.NotebookNode) -> None:
    for c in executed.cells:
        if c.cell_type == "code":
            assert not [o for o in c.outputs if o.output_type == "error"], c.source
            assert c.execution_count is not None, f"cell {c.id} did not run"


@pytest.mark.parametrize(("cell_id", "tags"), [("sync", "2/2"), ("resync", "3/3")])
def test_a_sync_shows_progress_then_its_result(
    executed: nbformat.NotebookNode, cell_id: str, tags: str
) -> None:
    c = cell(executed, cell_id)
    views = data(c, WIDGET_VIEW)
    if views:  # tqdm's widget (ipywidgets), finished with the sync's final counts
        assert len(views) == 1
        text = widget_text(executed, views[0])
        assert tags in text and "done" in text, text
        done, total = tags.split("/")
        assert widget_bar(executed, views[0]) == (float(done), float(total))  # a real bar
    else:  # tqdm's text bar, without ipywidgets
        bars = "".join(o["text"] for o in c.outputs if o.get("name") == "stderr")
        assert tags in bars and "done" in bars, c.outputs
    (html,) = data(c, "text/html")
    assert "Sync of hello" in html and "complete" in html


def test_the_versions_and_the_diff_show_as_tables(executed: nbformat.NotebookNode) -> None:
    (versions,) = data(cell(executed, "versions"), "text/html")
    assert "hello: 3 versions" in versions and "<table>" in versions
    (diff,) = data(cell(executed, "diff"), "text/html")
    assert "hello version 1 -&gt; 2" in diff and "<table>" in diff
    assert "<td>1.1</td>" in diff and "<td>latest</td>" in diff
    (as_json,) = data(cell(executed, "diff-json"), "text/plain")
    assert "'tags_moved'" in as_json


def test_a_mirror_sync_with_a_typo_filter_is_refused(executed: nbformat.NotebookNode) -> None:
    text = stdout(cell(executed, "empty-mirror"))
    assert text.startswith("refused: repository 'hello'")
    assert "include_tags=['zzz*']" in text and "would empty the repository" in text


def test_the_app_serves_the_mirror_and_rolls_back(executed: nbformat.NotebookNode) -> None:
    text = stdout(cell(executed, "host"))
    assert "'tags': ['1.0', '1.1', 'latest']" in text
    assert "application/vnd.oci.image.manifest.v1+json sha256:" in text
    (pinned,) = data(cell(executed, "rollback"), "text/html")
    assert "version 1 of" in pinned
    (following,) = data(cell(executed, "roll-forward"), "text/html")
    assert "latest version of" in following


def test_the_last_cell_leaves_nothing_behind(executed: nbformat.NotebookNode, tmp: Path) -> None:
    """The upstream server is stopped and the temporary directory removed."""
    (shown,) = data(cell(executed, "upstream"), "text/plain")  # 'http://127.0.0.1:PORT'
    url = shown.strip("'")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v2/", timeout=5)
    assert not list((tmp / "tmp").iterdir())
