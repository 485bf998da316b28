"""Papermill smoke runs of every numbered notebook, through the kit's own runner."""

import json

import pytest

from stkit import metrics as declared
from stkit.runner import numbered_notebooks, run_notebook


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # shared: notebooks reuse each other's synthetic data


def test_notebooks_are_stored_without_outputs():
    import nbformat

    for path in numbered_notebooks():
        nb = nbformat.read(path, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} have stored outputs"


@pytest.mark.notebook
@pytest.mark.parametrize("path", numbered_notebooks(), ids=lambda p: p.stem)
def test_notebook_smoke(path, tmp_path, data_dir):
    out_dir = tmp_path / path.stem
    run_notebook(path, tmp_path / f"{path.stem}.ipynb", {"RUN_SIZE": "smoke", "OUT_DIR": str(out_dir), "DATA_DIR": str(data_dir), "INTERACTIVE": False})
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics, f"{path.name} wrote no metrics"
    for section, values in metrics.items():  # every key declared in stkit.metrics, none missing
        declared.check(section, values)
