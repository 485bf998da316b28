"""The notebook runner: parameter checking, failures, HTML and the merged report."""

import json
import subprocess
import sys

import nbformat
import pytest

from stkit.report.runner import NotebookError, check_parameters, notebook_parameters, run_all, run_notebook


def make_notebook(path, body: str, params: str = "RUN_SIZE = 'quick'\nOUT_DIR = 'out'\nSCALE = 2\n"):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


WRITE_METRICS = (
    "import json, os, pathlib\n"
    "pathlib.Path(OUT_DIR).mkdir(parents=True, exist_ok=True)\n"
    "json.dump({SECTION: {'value': SCALE * 2, 'cwd': os.path.basename(os.getcwd())}}, open(os.path.join(OUT_DIR, 'metrics.json'), 'w'))\n"
)


def test_parameters_are_read_from_the_tagged_cell(tmp_path):
    nb = make_notebook(tmp_path / "01_a.ipynb", "pass")
    assert notebook_parameters(nb) == {"RUN_SIZE": "quick", "OUT_DIR": "out", "SCALE": 2}


def test_unknown_parameter_is_rejected_and_nothing_written(tmp_path):
    nb = make_notebook(tmp_path / "01_a.ipynb", "pass")
    out = tmp_path / "out" / "01_a.ipynb"
    with pytest.raises(NotebookError, match=r"unknown parameter\(s\) \['SCALLE'\].*accepts"):
        run_notebook(nb, out, {"SCALLE": 3})
    assert not (tmp_path / "out").exists()
    with pytest.raises(NotebookError, match="RUN_SIZE must be one of"):
        check_parameters(nb, {"RUN_SIZE": "huge"})
    with pytest.raises(NotebookError, match="no notebook"):
        run_all("smoke", tmp_path / "rep", [nb], extra={"SCALLE": 1})
    assert not (tmp_path / "rep").exists()


def test_failing_cell_names_notebook_and_error(tmp_path):
    nb = make_notebook(tmp_path / "02_bad.ipynb", "raise ValueError('the culprit')")
    out = tmp_path / "out" / "02_bad.ipynb"
    with pytest.raises(NotebookError, match=r"02_bad.ipynb failed in cell .*ValueError: the culprit"):
        run_notebook(nb, out)
    assert out.exists() and out.with_suffix(".html").exists()


def test_run_all_merges_metrics_and_writes_index(tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    a = make_notebook(nbdir / "01_a.ipynb", "SECTION = 'alpha'\n" + WRITE_METRICS)
    b = make_notebook(nbdir / "02_b.ipynb", "SECTION = 'beta'\n" + WRITE_METRICS)
    metrics = run_all("smoke", tmp_path / "rep", [a, b], extra={"SCALE": 5})
    assert metrics["alpha"] == {"value": 10, "cwd": "notebooks"}  # ran with cwd = the notebook folder
    assert metrics["beta"]["value"] == 10
    saved = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert saved["report"]["notebooks"] == ["01_a", "02_b"]
    index = (tmp_path / "rep" / "index.html").read_text()
    assert "01_a.html" in index and "02_b.html" in index and "alpha" in index
    assert (tmp_path / "rep" / "01_a.html").exists()


def test_duplicate_metric_sections_are_an_error(tmp_path):
    a = make_notebook(tmp_path / "01_a.ipynb", "SECTION = 'same'\n" + WRITE_METRICS)
    b = make_notebook(tmp_path / "02_b.ipynb", "SECTION = 'same'\n" + WRITE_METRICS)
    with pytest.raises(NotebookError, match="'same'"):
        run_all("smoke", tmp_path / "rep", [a, b])


def test_cli_reports_unknown_parameter(tmp_path):
    nb = make_notebook(tmp_path / "01_a.ipynb", "pass")
    proc = subprocess.run(
        [sys.executable, "-m", "stkit", "run", str(nb), "--out", str(tmp_path / "o" / "x.ipynb"), "-p", "SCAL", "3"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "SCAL" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_executed_copy_never_lands_beside_the_sources(tmp_path):
    nb = make_notebook(tmp_path / "01_a.ipynb", "pass")
    before = nb.read_bytes()
    with pytest.raises(NotebookError, match="own folder"):
        run_notebook(nb, nb)
    assert nb.read_bytes() == before
