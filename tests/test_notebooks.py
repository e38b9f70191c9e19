"""Every notebook in notebooks/ runs top to bottom, on a tiny setting, in this interpreter.

Each notebook is executed with nbclient in a fresh ``python3`` kernel. The kernelspec is written
into a temporary ``JUPYTER_PATH`` entry, which Jupyter searches before the user's and the
environment's kernels, with ``argv[0] = sys.executable``: the kernel runs the interpreter that runs
the tests (the virtual environment's, with this checkout's ``lmjax`` first on ``PYTHONPATH``),
whatever other ``python3`` kernels are installed. A cell that raises fails the test with the
cell's source and traceback.

The notebooks read ``LMJAX_NOTEBOOK_STEPS`` and ``LMJAX_NOTEBOOK_WORKDIR`` (01: here it trains a
few steps into a temporary directory), ``LMJAX_NOTEBOOK_DRAWS`` (02: here it draws each masking
rule a few times) and ``LMJAX_NOTEBOOK_EPOCHS`` / ``LMJAX_NOTEBOOK_EXAMPLES`` (03: one epoch of
64 fine-tuning examples). After the run, the notebook's own check (``OUTPUT_CHECKS``) looks at what it
left behind: a plot file, or the table it printed.
"""

import glob
import os
import sys

import pytest

# Test-only dependencies (pyproject [test] extra): a missing one is an error, never a skip.
import nbclient  # noqa: E402
import nbformat  # noqa: E402
from ipykernel import kernelspec  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "*.ipynb")))
KERNEL = "python3"
CELL_TIMEOUT_S = 300  # one cell, e.g. the training run: compiling on a busy CPU included
STEPS = 3
DRAWS = 20
FINETUNE_EXAMPLES = 64  # 03: two batches of fine-tuning


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {os.path.join(REPO, 'notebooks')}"


def _interpreter_check_cell():
    """Returns a cell that fails unless the kernel runs this test's interpreter."""
    return nbformat.v4.new_code_cell(
        f"import sys\nassert sys.executable == {sys.executable!r}, sys.executable"
    )


def _printed(notebook):
    """Returns the text the notebook's cells printed (stream outputs), in order."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    )


def _tiny_gpt_plotted_its_loss(notebook, tmp_path):
    assert os.path.isfile(tmp_path / "run" / "loss.png")


MASKING_RULES = ("BERT fixed", "Bernoulli", "whole-word", "ALBERT n-gram", "ELECTRA")


def _masking_rules_printed_their_rates(notebook, tmp_path):
    printed = _printed(notebook)
    title = f"measured rates over {DRAWS} draws"
    assert title in printed, f"no '{title}' table in the printed output:\n{printed[-2000:]}"
    rows = printed.split(title, 1)[1].splitlines()[2 : 2 + len(MASKING_RULES)]
    for rule, row in zip(MASKING_RULES, rows):
        assert row.startswith(rule), (rule, row)
        assert row.split()[-1] == "0", f"special positions selected: {row}"
        assert row.count("±") == 4, f"expected 4 cells of measured (expected ± SE): {row}"


def _finetuning_printed_epochs_and_predictions(notebook, tmp_path):
    printed = _printed(notebook)
    assert "best epoch 1: accuracy" in printed, printed[-2000:]
    assert printed.count("predicted") >= 6 and "confusion (rows: true" in printed
    assert os.path.isfile(tmp_path / "run" / "docs_package" / "results.json")


# What each notebook must leave behind besides running without errors.
OUTPUT_CHECKS = {
    "01_tiny_gpt.ipynb": _tiny_gpt_plotted_its_loss,
    "02_masking_rules.ipynb": _masking_rules_printed_their_rates,
    "03_finetune_docs_task.ipynb": _finetuning_printed_epochs_and_predictions,
}


def test_every_notebook_has_an_output_check():
    assert {os.path.basename(p) for p in NOTEBOOKS} <= set(OUTPUT_CHECKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_without_errors(path, tmp_path, monkeypatch):
    jupyter_dir = tmp_path / "jupyter"
    kernelspec.write_kernel_spec(str(jupyter_dir / "kernels" / KERNEL))  # argv[0] = sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_dir))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("LMJAX_NOTEBOOK_STEPS", str(STEPS))
    monkeypatch.setenv("LMJAX_NOTEBOOK_WORKDIR", str(tmp_path / "run"))
    monkeypatch.setenv("LMJAX_NOTEBOOK_DRAWS", str(DRAWS))
    monkeypatch.setenv("LMJAX_NOTEBOOK_EPOCHS", "1")
    monkeypatch.setenv("LMJAX_NOTEBOOK_EXAMPLES", str(FINETUNE_EXAMPLES))

    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata.kernelspec.name == KERNEL, "save the notebook with the python3 kernel"
    assert all(not cell.get("outputs") for cell in notebook.cells), "clear the outputs first"
    notebook.cells.insert(0, _interpreter_check_cell())
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{os.path.basename(path)}: a cell raised:\n{error}", pytrace=False)
    OUTPUT_CHECKS[os.path.basename(path)](notebook, tmp_path)
