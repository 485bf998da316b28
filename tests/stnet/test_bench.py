"""Tests of stkit.stnet.bench: the training-step timing script runs at smoke size."""

from __future__ import annotations


def test_bench_script_runs_at_smoke_size(capsys):
    from stkit.stnet.bench import run_bench

    out = run_bench("smoke", steps=1, height=64, width=80)
    assert out["fps_shuffle"] > 0 and out["fps_per_frame"] > 0 and "step_s_reference" in out
    assert "train step" in capsys.readouterr().out
