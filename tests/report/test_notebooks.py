"""Papermill smoke runs of every numbered notebook, through the kit's own runner."""

import json
import re

import nbformat
import pytest

from stkit.data import datasets
from stkit.report import catalog as declared
from stkit.report.runner import numbered_notebooks, run_notebook


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # shared: notebooks reuse each other's synthetic data


def test_notebooks_are_stored_without_outputs():
    import nbformat

    for path in numbered_notebooks():
        nb = nbformat.read(path, as_version=4)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} have stored outputs"


KIT_KERNEL = {"name": "stkit", "display_name": "Python (stkit)", "language": "python"}


def test_notebooks_open_on_the_kits_kernel():
    import nbformat

    for path in numbered_notebooks():
        spec = dict(nbformat.read(path, as_version=4).metadata.get("kernelspec", {}))
        assert spec == KIT_KERNEL, f"{path.name} declares kernel {spec}; JupyterLab would start a Python without the kit"


def test_default_out_dir_is_not_the_reports_folder():
    # A notebook run by hand must not overwrite what `make report` wrote.
    from stkit.report.runner import notebook_parameters

    for path in numbered_notebooks():
        out_dir = str(notebook_parameters(path).get("OUT_DIR", ""))
        assert out_dir and "reports" not in out_dir.split("/"), f"{path.name}: default OUT_DIR {out_dir!r}"


def _table_rows(markdown: str):
    """Cell counts of each markdown table row (| outside code spans and math)."""
    tables, current = [], []
    for line in markdown.splitlines() + [""]:
        if line.strip().startswith("|"):
            bare = re.sub(r"`[^`]*`|\$[^$]*\$", "x", line.replace("\\|", "x"))
            current.append(bare.strip().strip("|").count("|") + 1)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_markdown_tables_have_even_rows():
    import nbformat

    for path in numbered_notebooks():
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "markdown":
                for rows in _table_rows(cell.source):
                    assert len(set(rows)) == 1, f"{path.name} cell {i}: table rows have {rows} cells (an unescaped |?)"


def test_table_check_can_fail():
    assert _table_rows("| a | b |\n|---|---|\n| x `|` | y |\n") == [[2, 2, 2]]
    assert _table_rows("| a | b |\n|---|---|\n| x | y | z |\n") == [[2, 2, 3]]


@pytest.mark.notebook
@pytest.mark.parametrize("path", numbered_notebooks(), ids=lambda p: p.stem)
def test_notebook_smoke(path, tmp_path, data_dir):
    out_dir = tmp_path / path.stem
    run_notebook(path, tmp_path / f"{path.stem}.ipynb", {"RUN_SIZE": "smoke", "OUT_DIR": str(out_dir), "DATA_DIR": str(data_dir), "INTERACTIVE": False})
    page = (tmp_path / f"{path.stem}.html").read_text()
    remote = re.findall(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']?(?:https?:)?//[^\"' >]+", page)
    assert not remote and "$$" not in page, f"{path.name}: the page needs the network ({remote[:3]}) or shows raw math"
    injected = [c for c in nbformat.read(tmp_path / f"{path.stem}.ipynb", as_version=4).cells if "injected-parameters" in c.metadata.get("tags", [])]
    absolute = re.findall(r"""= *["'](/[^"']*)""", injected[0].source) if injected else []
    assert injected and not absolute, f"injected parameters carry machine paths {absolute}"
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics, f"{path.name} wrote no metrics"
    for section, values in metrics.items():  # every key declared in stkit.metrics, none missing
        declared.check(section, values)


# Notebooks that read a real dataset in the paper size, and the dataset each must name.
NEEDS_REAL_DATA = {"01_data_preparation": "CheXpert", "03_stern_two_stage_training": "CheXpert",
                   "05_stnet_training_and_attention": "BUV", "06_reproduce_paper_metrics": "CheXpert"}


def test_real_data_list_names_existing_notebooks():
    assert set(NEEDS_REAL_DATA) <= {p.stem for p in numbered_notebooks()}


@pytest.mark.notebook
@pytest.mark.parametrize("stem", sorted(NEEDS_REAL_DATA))
def test_paper_size_without_data_stops_at_once(stem, tmp_path):
    """RUN_SIZE=paper with a data folder that does not exist: the notebook stops in its first
    cells with the dataset's name, where to request it and the preparation command."""
    from stkit.report.runner import NotebookError

    [path] = [p for p in numbered_notebooks() if p.stem == stem]
    missing = tmp_path / "no_such_data"
    with pytest.raises(NotebookError) as err:
        run_notebook(path, tmp_path / f"{stem}.ipynb", {"RUN_SIZE": "paper", "OUT_DIR": str(tmp_path / "out"),
                                                          "DATA_DIR": str(missing), "INTERACTIVE": False}, html_output=False)
    text = str(err.value)
    d = next(d for d in datasets.DATASETS.values() if d.name.startswith(NEEDS_REAL_DATA[stem]))
    assert "MissingDataError" in text and d.name in text and d.request in text, text
    assert not missing.exists(), "the notebook created the missing data folder instead of stopping"
    executed = nbformat.read(tmp_path / f"{stem}.ipynb", as_version=4)
    ran = [c for c in executed.cells if c.cell_type == "code" and c.get("execution_count")]
    assert len(ran) <= 5, f"{stem} ran {len(ran)} cells before stopping"
