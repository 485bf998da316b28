"""Timing script (not a test): one STNet training step with the compiled op vs the reference,
and encoder-feature-shuffle vs frame-by-frame inference, measured in one run; and the
op's call shapes in the STNet recipes, for the op benchmark.

    python -m stkit bench stnet --size quick [--steps 3] [--device cpu] [--amp bf16] [--threads 1]
    python -m stkit bench ops --shapes stnet-enc-quick,stnet-dec-paper    # shapes from op_shapes()

Prints, per op implementation, the median forward+backward time of one training step on a
random clip batch (the recipe's global batch of ``--height`` x ``--width`` clips) and the
peak memory (CUDA: peak allocated; CPU: the process's peak resident size so far, which
only grows, so the first row is the cleaner one), their ratio, and the inference frames
per second of both modes. The reference rows run inside ``stkit.ops.reference_only()``.
"""

from __future__ import annotations

import resource
import statistics
import time

import torch

from ..ops import backend, reference_only
from ..ops.bench import BenchShape
from .experiment import build, recipe
from .loss import SetCriterion, loss_on_batch
from .inference import predict_clip

__all__ = ["bench_step", "bench_inference", "op_shapes", "run_bench", "FRAME_SIZES"]

# Frame size (H, W) each recipe's clips have: the synthetic videos, and BUV at test short side 512.
FRAME_SIZES = {"quick": (128, 160), "paper": (512, 672)}


def _levels(height: int, width: int) -> tuple[tuple[int, int], ...]:
    """One frame's 4 feature levels (strides 8, 16, 32, 64; ceil as the backbone's convolutions)."""
    return tuple((-(-height // s), -(-width // s)) for s in (8, 16, 32, 64))


def op_shapes(sizes=("quick", "paper")) -> dict[str, BenchShape]:
    """The op's second call in each STNet attention layer, for one clip of each recipe: the
    query's other frames folded into the level axis as pseudo-levels. Encoder: every pixel
    of a frame is a query, over the T-1 other frames; decoder: the object queries over all T
    frames (the kit's decoder samples the current frame again among them)."""
    out = {}
    for size in sizes:
        cfg, (h, w) = recipe(size).model, FRAME_SIZES[size]
        lv, T, M, D = _levels(h, w), cfg.n_frames, cfg.n_heads, cfg.d_model // cfg.n_heads
        S = sum(a * b for a, b in lv)
        out[f"stnet-enc-{size}"] = BenchShape(f"stnet-enc-{size}", T, lv * (T - 1), S, M=M, D=D, P=cfg.enc_temporal_points,
                                              note=f"STNet {size} encoder, {T - 1} other frames, {h}x{w} frames")
        out[f"stnet-dec-{size}"] = BenchShape(f"stnet-dec-{size}", 1, lv * T, cfg.num_queries, M=M, D=D,
                                              P=cfg.dec_temporal_points, note=f"STNet {size} decoder, {T} frames")
    return out


def random_batch(cfg, B: int, H: int, W: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    T = cfg.n_frames
    box = torch.tensor([[0.2 * W, 0.3 * H, 0.5 * W, 0.6 * H]])
    targets = [[{"boxes": box, "labels": torch.tensor([1 + b % 2]),
                 "image_id": 10 * b + t, "size": torch.tensor([H, W]), "orig_size": torch.tensor([H, W])}
                for t in range(T)] for b in range(B)]
    return {"frames": torch.rand(B, T, 3, H, W, generator=gen),
            "mask": torch.zeros(B, T, H, W, dtype=torch.bool), "targets": targets}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def bench_step(model, cfg, batch, steps: int, device, amp: str | None = None):
    """Median wall seconds and CPU seconds (all threads; steadier than wall time on a busy
    machine) of forward+backward of one training step, and peak memory (MB)."""
    crit = SetCriterion(cfg)
    times, cpu = [], []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(steps + 1):  # the first step warms up
        model.zero_grad(set_to_none=True)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            loss, _ = loss_on_batch(model, crit, batch)
        loss.backward()
        _sync(device)
        if i:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu), _peak_mb(device)


def bench_inference(model, batch, repeats: int, device) -> dict:
    """Frames per second of shuffle (K frames per pass) and per-frame inference."""
    model.eval()
    out = {}
    for mode in ("shuffle", "per_frame"):
        predict_clip(model, batch, mode)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        n = sum(len(predict_clip(model, batch, mode)) for _ in range(repeats))
        _sync(device)
        out[f"fps_{mode}"] = n / (time.perf_counter() - t0)
    model.train()
    return out


def run_bench(size: str = "quick", steps: int = 3, height: int = 128, width: int = 160, device: str = "cpu",
              amp: str | None = None, baseline: bool = False, threads: int | None = None) -> dict:
    """Time a training step (compiled op and reference) and both inference modes; print and return the figures."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device)
    r = recipe(size)
    model = build(r, "baseline" if baseline else "stnet", seed=0).to(device).train()
    cfg, B = model.config, r.stages[0].batch_size
    batch = random_batch(cfg, B, height, width)
    print(f"STNet {size}: {B} clips x {cfg.n_frames} frames x {height}x{width}, device {device}, amp {amp}, "
          f"op {backend(device)}, {torch.get_num_threads()} CPU threads")
    rows = {}
    for name in ("compiled", "reference"):
        if name == "compiled" and not backend(device).startswith("compiled"):
            print("compiled: not available here; skipped")
            continue
        if name == "reference":
            with reference_only():
                sec, cpu, mb = bench_step(model, cfg, batch, steps, device, amp)
        else:
            sec, cpu, mb = bench_step(model, cfg, batch, steps, device, amp)
        rows[name] = (sec, cpu)
        print(f"{name:9s}: train step {sec * 1000:8.1f} ms wall, {cpu:6.2f} CPU s   peak memory {mb:8.1f} MB")
    if len(rows) == 2:
        print(f"reference / compiled: {rows['reference'][0] / rows['compiled'][0]:.2f}x wall, "
              f"{rows['reference'][1] / rows['compiled'][1]:.2f}x CPU time")
    inf = bench_inference(model, random_batch(cfg, 1, height, width), max(steps, 2), device)
    print(f"inference: shuffle {inf['fps_shuffle']:.1f} frames/s, per-frame "
          f"{inf['fps_per_frame']:.1f} frames/s, ratio {inf['fps_shuffle'] / inf['fps_per_frame']:.2f}x")
    return {**{f"step_s_{k}": v[0] for k, v in rows.items()}, **inf}
