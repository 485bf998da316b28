"""Tests of stkit.stnet.experiment: the command line trains then evaluates (experiment.run, evaluate_run)."""

import json
import os
import subprocess
import sys

import pytest


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "stkit", "stnet", *args], capture_output=True, text=True,
                          env=env or {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}, timeout=600)


def test_cli_train_then_eval(smoke_buv, tmp_path):
    out = _cli("train", "--data", str(smoke_buv), "--out", str(tmp_path), "--size", "smoke", "--variants", "baseline")
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"val_ap50", "key_ap50", "fps_shuffle", "fps_per_frame"} <= set(results["baseline"])
    ev = _cli("eval", "--data", str(smoke_buv), "--out", str(tmp_path), "--size", "smoke", "--variants", "baseline")
    assert ev.returncode == 0, ev.stderr[-3000:]
    again = json.loads((tmp_path / "eval.json").read_text())["baseline"]
    assert again["val_ap50"] == pytest.approx(results["baseline"]["val_ap50"])  # same weights, same frames
    bad = _cli("eval", "--data", str(smoke_buv), "--out", str(tmp_path), "--size", "quick", "--variants", "baseline")
    assert bad.returncode == 2 and "different configuration" in bad.stderr
