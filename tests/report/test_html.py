"""The HTML report renders offline: MathML instead of a CDN MathJax, titles, links, flags."""

import json

import nbformat

from stkit.report import html as report


def test_math_becomes_mathml_outside_code():
    md = "Inline $a_i = b$, money \\$5, code `$x$`,\n$$\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}$$\n```\n$$kept$$\n```"
    out = report.math_to_mathml(md)
    assert out.count("<math") == 2 and 'display="block"' in out and "<mtable" in out
    assert "`$x$`" in out and "$$kept$$" in out and "\\$5" in out
    assert "$$\\begin" not in out


def test_exported_page_is_offline_titled_and_links_back(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 07 · A title\n\n$$x^2$$ and $y$"), nbformat.v4.new_code_cell("1 + 1")]
    path = tmp_path / "07_x.ipynb"
    nbformat.write(nb, path)
    page = report.export_html(path).read_text()
    assert "<title>07 · A title</title>" in page
    assert 'href="index.html"' in page
    assert "<script src=" not in page and "cdnjs" not in page and "$$" not in page
    assert "<math" in page


def test_index_flags_chance_and_winning_baselines(tmp_path):
    metrics = {
        "report": {"size": "quick", "seconds": {}, "notebooks": [], "environment": {"torch": "x"}},
        "stern": {"test_auc": 0.52, "baseline_test_auc": 0.9},
    }
    report.write_index(tmp_path, metrics, [])
    page = (tmp_path / "index.html").read_text()
    assert "at chance level" in page and "the baseline does better" in page
    assert "built-in synthetic data" in page and "not comparable" in page
    assert "not run" in page  # STNet numbers this run did not produce
    assert "STERN (bounded STN) after both stages" in page  # meaning, not just the key
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert report.flags("stern", "test_auc", {"test_auc": 0.93, "baseline_test_auc": 0.9}) == []
