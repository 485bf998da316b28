"""stkit.report.compare: collecting a report's numbers, and notebook 06's tables against the report's metrics.json."""

import json
import random
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from stkit.engine.checkpoint import load
from stkit.report import compare, papers
from stkit.stern import STERN, STERNConfig
from stkit.stern.config import DataConfig
from stkit.stern.evaluate import predict
from stkit.stern.experiment import load_splits, run
from stkit.report.runner import run_all
from tests.engine.test_recipe import TINY, _tiny_cxr

NB06 = Path(__file__).resolve().parents[2] / "notebooks" / "06_reproduce_paper_metrics.ipynb"


def test_report_sections_in_two_files_are_an_error(tmp_path):
    for name in ("03_a", "05_b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"stern": {"test_auc": 0.7}}))
    with pytest.raises(ValueError, match="in both"):
        compare.collect_report(tmp_path, "quick")


def test_label_files_beside_the_generators_manifest_are_synthetic(tmp_path):
    (tmp_path / "labels.csv").write_text("path,label\n")
    assert compare.labels_data(tmp_path / "labels.csv") == "real"
    (tmp_path / "manifest.json").write_text(json.dumps({"generator": "data_prep.synthetic_cxr"}))
    assert compare.labels_data(tmp_path / "labels.csv") == "synthetic"


def _fake_notebook(path: Path, sections: dict) -> Path:
    """A numbered notebook that writes ``sections`` as its metrics.json (stands in for 03 and 05)."""
    nb = new_notebook(cells=[
        new_code_cell('RUN_SIZE = "quick"\nOUT_DIR = "out"\nDATA_DIR = "data"\nINTERACTIVE = True', metadata={"tags": ["parameters"]}),
        new_code_cell(f"from pathlib import Path\nPath(OUT_DIR).mkdir(parents=True, exist_ok=True)\n"
                      f"Path(OUT_DIR, 'metrics.json').write_text({json.dumps(sections)!r})"),
    ])
    nb.metadata["kernelspec"] = {"name": "stkit", "display_name": "Python (stkit)", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.notebook
def test_notebook_06_tables_match_the_report_metrics(tmp_path):
    rng = random.Random()  # fresh numbers every run
    stern = {k: rng.uniform(0.5, 1) for _, s, k in compare.STERN_RUN_ROWS if s == "stern"}
    stnet = {k: rng.uniform(0, 1) for _, s, k in compare.STNET_RUN_ROWS + compare.SPEED_RUN_ROWS}
    dropped = [("stern", rng.choice(sorted(stern))), ("stnet", rng.choice(sorted(stnet)))]
    for s, k in dropped:
        {"stern": stern, "stnet": stnet}[s].pop(k)
    fake = _fake_notebook(tmp_path / "03_fake_runs.ipynb", {"stern": stern, "stnet": stnet})
    reports = tmp_path / "reports"
    merged = run_all("smoke", reports, [fake, NB06], data_dir=tmp_path / "data")
    on_disk = json.loads((reports / "metrics.json").read_text())
    assert on_disk["stern"] == merged["stern"] == stern and on_disk["stnet"] == stnet
    tables = json.loads((reports / "06_reproduce_paper_metrics" / "paper_tables.json").read_text())
    rows = [r for t in tables.values() for r in t]
    shown = [r for r in rows if r["kind"] == "paper"]
    assert len(shown) == sum(r.value is not None for r in papers.REPORTED)  # every numeric paper number is shown
    for r in shown:
        assert r["source"] and isinstance(r["verified"], bool), r
        assert ("unverified" in r["shown"]) == (not r["verified"]), r
    runs = [r for r in rows if r["kind"] == "this run"]
    assert len(runs) == len(compare.STERN_RUN_ROWS + compare.STNET_RUN_ROWS + compare.SPEED_RUN_ROWS)
    for r in runs:
        section, key = r["metric"].split(".")
        assert r["value"] == on_disk[section].get(key), r  # the table's number is the report's number
        assert (r["shown"] == "not run") == ((section, key) in dropped), r
        assert r["value"] is None or r["data"].startswith("synthetic"), r
    assert on_disk["paper"]["run_numbers_missing"] == 2 and on_disk["paper"]["sections_on_real_data"] == 0
    page = (reports / "06_reproduce_paper_metrics.html").read_text()
    assert "SYNTHETIC DATA" in page and "(unverified)" in page


def test_stern_run_checkpoints_are_evaluated_afresh(tmp_path):
    import torch
    from sklearn.metrics import roc_auc_score

    labels = _tiny_cxr(tmp_path / "data")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY.replace("epochs: 2", "epochs: 1").replace("freeze: [classifier]", "freeze: []"))
    stored = run(labels, tmp_path / "run", recipe, ("bounded", "baseline"), progress=False)
    from_json, where = compare.collect_stern_run(tmp_path / "run")
    assert from_json == {"test_auc": stored["bounded"]["test_auc"], "baseline_test_auc": stored["baseline"]["test_auc"]}
    assert where.startswith("real")  # a hand-made label file, no generator manifest beside it
    fresh, _ = compare.collect_stern_run(tmp_path / "run", labels)
    ckpt = load(tmp_path / "run" / "bounded" / "s1_best.pt")
    model = STERN(STERNConfig.from_dict(ckpt["record"]["model_config"]))
    model.load_state_dict(ckpt["model"])
    pred = predict(model, load_splits(labels, DataConfig())["test"])
    assert fresh["test_auc"] == pytest.approx(roc_auc_score(pred["labels"], pred["scores"]), abs=1e-12)
    assert torch.isfinite(torch.tensor(fresh["baseline_test_auc"]))
