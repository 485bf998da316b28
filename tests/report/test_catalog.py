"""Metric names are declared once (stkit.report.catalog): writers refuse others, paper rows point at real keys."""

import json

import pytest

from stkit.report import catalog, notebook, papers


def test_write_metrics_refuses_an_undeclared_key(tmp_path):
    good = {k: 1.0 for k in catalog.required("stern")}
    notebook.write_metrics(tmp_path, "stern", good)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"stern": good}
    with pytest.raises(KeyError, match=r"stern\.test_acu is not declared"):
        notebook.write_metrics(tmp_path, "stern", good | {"test_acu": 0.9})
    with pytest.raises(KeyError, match="lacks required key"):
        notebook.write_metrics(tmp_path, "stern", {"test_auc": 0.9})
    with pytest.raises(KeyError, match="unknown metrics section"):
        notebook.write_metrics(tmp_path, "sterm", good)


def test_patterns_and_declarations():
    assert catalog.find("ops", "speedup_fwd_A").unit == "x"
    assert catalog.find("stern", "test_auc").chance == 0.5
    for section, table in catalog.SECTIONS.items():
        for key, m in table.items():
            assert m.key == key and m.meaning, f"{section}.{key} needs a meaning"


def test_every_paper_number_points_at_a_declared_key():
    for r in papers.REPORTED:
        if r.metric_key is not None:
            catalog.find(*r.metric_key)


def test_a_malformed_catalog_row_names_its_line(tmp_path):
    head = "# comment\n" + "\t".join(catalog._COLUMNS) + "\n"
    good = "stern\ttest_auc\tAUC\tyes\t0.5\t-\tSTERN's AUC\n"
    path = tmp_path / "c.tsv"
    path.write_text(head + good)
    assert catalog._read(path)["stern"]["test_auc"] == catalog.Metric("test_auc", "STERN's AUC", "AUC", True, 0.5, None)
    path.write_text(head + good + "stern\tshort\tAUC\n")
    with pytest.raises(ValueError, match=r"c.tsv:4: expected 7 tab-separated fields"):
        catalog._read(path)
    path.write_text(head + good + good)
    with pytest.raises(ValueError, match=r"c.tsv:4: stern.test_auc is declared twice"):
        catalog._read(path)

