"""The op benchmark's timing rules (steady state, backends in turns) and its command line.

Timings themselves are not tested (they depend on the machine); what is tested is that
the figures come from the steady state and that one run times every backend.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

from stkit.ops import bench, timing


def test_warm_up_outlasts_a_slow_start(monkeypatch):
    """Calls that start slow (fresh memory faulting in) stay out of the median: the warm-up
    lasts WARM_S seconds, not only `warmup` calls."""
    monkeypatch.setattr(timing, "WARM_S", 0.2)
    monkeypatch.setattr(timing, "TIMED_S", 0.02)
    calls = []

    def fn():  # 12 slow calls (0.12 s) first, fast ones after
        calls.append(None)
        time.sleep(0.01 if len(calls) <= 12 else 0.001)

    ms = timing.timeit(fn, torch.device("cpu"), warmup=2, repeats=7)
    assert ms < 5, ms
    assert len(calls) > 12 + 7


def test_slow_calls_skip_warm_up_and_stop_at_the_budget():
    calls = []

    def fn():
        calls.append(None)
        time.sleep(0.05)

    ms = timing.timeit(fn, torch.device("cpu"), warmup=2, repeats=50, budget_s=0.12)
    assert 45 < ms < 200
    assert len(calls) <= 3  # no warm-up (slower than budget / 4), then stopped by budget


def test_backends_are_timed_in_turns(monkeypatch):
    monkeypatch.setattr(timing, "WARM_S", 0.0)
    monkeypatch.setattr(timing, "TIMED_S", 0.0)
    order = []

    def backend(name):
        def fn(value, ss, lsi, loc, attn):
            order.append(name)
            return (value.sum() + loc.sum() + attn.sum()).expand(value.shape[0], loc.shape[1],
                                                                 value.shape[2] * value.shape[3])
        return fn

    inputs = bench.make_inputs(bench.SHAPES["T"], torch.float32)
    timed = bench._measure({"a": backend("a"), "b": backend("b")}, inputs,
                           torch.device("cpu"), warmup=0, repeats=timing.ROUNDS)
    assert set(timed) == {"a", "b"} and all(len(v) == 2 and min(v) > 0 for v in timed.values())
    switches = sum(x != y for x, y in zip(order, order[1:]))
    assert switches >= 2 * (2 * timing.ROUNDS - 1) - 1, order  # a, b, a, b, ... per mode


def test_command_line_times_reference_and_kernel(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [sys.executable, "-m", "stkit", "bench", "ops", "--shapes", "T", "--threads", "1",
         "--repeats", "1", "--warmup", "0", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "allocator:" in proc.stdout and "limits (float32)" in proc.stdout
    data = json.loads(out.read_text())
    backends = [r["backend"] for r in data["results"]]
    assert backends[0] == "reference" and len(backends) == 2, backends
    assert data["results"][0]["speedup_fwd"] == 1.0
    assert data["meta"]["freed_memory_kept"] is (sys.platform == "linux")
    for r in data["results"]:
        assert r["fwd_ms"] > 0 and r["fwd_bwd_ms"] > 0 and 0 < r["fwd_pct_bw"]


def test_bench_command_offers_the_stnet_recipes_shapes():
    proc = subprocess.run([sys.executable, "-m", "stkit", "bench", "ops", "--help"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "--shapes" in proc.stdout and "stnet-dec-paper" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "stkit", "bench", "ops", "--shapes", "Z"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown shape(s) ['Z']" in proc.stderr


def test_stnet_shapes_follow_the_recipes():
    from stkit.stnet.bench import op_shapes
    from stkit.stnet.experiment import recipe

    shapes = op_shapes()
    for size in ("quick", "paper"):
        cfg = recipe(size).model
        enc, dec = shapes[f"stnet-enc-{size}"], shapes[f"stnet-dec-{size}"]
        assert (enc.N, len(enc.levels), enc.P, enc.M) == (cfg.n_frames, 4 * (cfg.n_frames - 1), cfg.enc_temporal_points, cfg.n_heads)
        assert (dec.Lq, len(dec.levels), dec.P, dec.D) == (cfg.num_queries, 4 * cfg.n_frames, cfg.dec_temporal_points,
                                                           cfg.d_model // cfg.n_heads)
    assert shapes["stnet-enc-paper"].levels[:4] == ((64, 84), (32, 42), (16, 21), (8, 11))  # 512 x 672 frames
    assert shapes["stnet-enc-quick"].Lq == 16 * 20 + 8 * 10 + 4 * 5 + 2 * 3  # every pixel of a 128 x 160 frame
