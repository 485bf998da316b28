"""Timing script (not a test): one STNet training step with the compiled op vs the reference,
and encoder-feature-shuffle vs frame-by-frame inference, measured in one run.

    python -m stkit.stnet.bench --size quick [--steps 3] [--device cpu] [--amp bf16] [--threads 1]

Prints, per op implementation, the median forward+backward time of one training step on a
random clip batch (``cfg.batch_size`` clips of ``--height`` x ``--width``) and the peak
memory (CUDA: peak allocated; CPU: the process's peak resident size so far, which only
grows, so the first row is the cleaner one), their ratio, and the inference frames per
second of both modes. Swapping the op: STDA calls ``stkit.stnet.attention.ms_deform_attn``,
which this script points at the compiled custom op or at the reference for each row.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import time

import torch

from ..ops import backend, ms_deform_attn_reference
from ..ops import ms_deform_attn as dispatching_op
from . import attention
from .config import stnet_config
from .criterion import SetCriterion, loss_on_batch
from .detector import build_stnet
from .inference import predict_clip

__all__ = ["bench_step", "bench_inference", "main"]


@contextlib.contextmanager
def op_impl(fn):
    """Temporarily make STDA call ``fn`` as its deformable-attention op."""
    saved = attention.ms_deform_attn
    attention.ms_deform_attn = fn
    try:
        yield
    finally:
        attention.ms_deform_attn = saved


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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="quick")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["bf16"], default=None)
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = stnet_config(args.size, baseline=args.baseline)
    model = build_stnet(cfg).to(device).train()
    batch = random_batch(cfg, cfg.batch_size, args.height, args.width)
    print(f"STNet {args.size}: {cfg.batch_size} clips x {cfg.n_frames} frames x "
          f"{args.height}x{args.width}, device {device}, amp {args.amp}, op {backend(device)}, "
          f"{torch.get_num_threads()} CPU threads")
    rows = {}
    for name, fn in (("compiled", dispatching_op), ("reference", ms_deform_attn_reference)):
        if name == "compiled" and not backend(device).startswith("compiled"):
            print("compiled: not available here; skipped")
            continue
        with op_impl(fn):
            sec, cpu, mb = bench_step(model, cfg, batch, args.steps, device, args.amp)
        rows[name] = (sec, cpu)
        print(f"{name:9s}: train step {sec * 1000:8.1f} ms wall, {cpu:6.2f} CPU s   "
              f"peak memory {mb:8.1f} MB")
    if len(rows) == 2:
        print(f"reference / compiled: {rows['reference'][0] / rows['compiled'][0]:.2f}x wall, "
              f"{rows['reference'][1] / rows['compiled'][1]:.2f}x CPU time")
    inf = bench_inference(model, random_batch(cfg, 1, args.height, args.width), max(args.steps, 2), device)
    print(f"inference: shuffle {inf['fps_shuffle']:.1f} frames/s, per-frame "
          f"{inf['fps_per_frame']:.1f} frames/s, ratio {inf['fps_shuffle'] / inf['fps_per_frame']:.2f}x")
    return {**{f"step_s_{k}": v[0] for k, v in rows.items()}, **inf}


if __name__ == "__main__":
    main()
