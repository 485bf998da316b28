"""Benchmarks: ``python -m stkit.bench ops`` times the deformable-attention op.

For each shape and dtype it times the grid_sample reference and the compiled kernel (if
built for the device) in the same run: forward alone (under no_grad) and forward +
backward, median over repeats after warm-up, and prints the speedup over the reference.
``run_ops_benchmark`` returns the same numbers as a list of dicts (notebook 04 plots them).

Shapes (M=8 heads, D=32 channels, P=4 points unless noted):
    T  tiny smoke case: N=1, levels 16x16, 8x8, Lq=S, M=2, D=8, P=2
    A  encoder-like: N=2, levels 64x64, 32x32, 16x16, 8x8, Lq=S=5440
    B  decoder-like: same value as A, Lq=300 queries
    C  Deformable DETR encoder at 800x1333 (levels 100x167, 50x84, 25x42, 13x21),
       N=2, Lq=S; GPU only (the reference alone takes seconds per call on a CPU)
This is a script, not a test: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from . import ops

__all__ = ["SHAPES", "BenchShape", "make_inputs", "run_ops_benchmark", "main"]


@dataclass(frozen=True)
class BenchShape:
    name: str
    N: int
    levels: tuple[tuple[int, int], ...]
    Lq: int | None  # None: Lq = S (encoder self-attention)
    M: int = 8
    D: int = 32
    P: int = 4
    gpu_only: bool = False

    @property
    def S(self) -> int:
        return sum(h * w for h, w in self.levels)

    @property
    def queries(self) -> int:
        return self.S if self.Lq is None else self.Lq

    def describe(self) -> str:
        lv = ", ".join(f"{h}x{w}" for h, w in self.levels)
        return (f"N={self.N}, levels {lv}, Lq={self.queries}, M={self.M}, D={self.D}, "
                f"P={self.P}")


_A_LEVELS = ((64, 64), (32, 32), (16, 16), (8, 8))
SHAPES: dict[str, BenchShape] = {
    "T": BenchShape("T", 1, ((16, 16), (8, 8)), None, M=2, D=8, P=2),
    "A": BenchShape("A", 2, _A_LEVELS, None),
    "B": BenchShape("B", 2, _A_LEVELS, 300),
    "C": BenchShape("C", 2, ((100, 167), (50, 84), (25, 42), (13, 21)), None, gpu_only=True),
}


def make_inputs(shape: BenchShape, dtype: torch.dtype, device: str | torch.device = "cpu",
                seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random op inputs for a shape: (value, spatial_shapes, level_start_index, loc, attn)."""
    g = torch.Generator().manual_seed(seed)
    L, N, M, D, P, Lq = len(shape.levels), shape.N, shape.M, shape.D, shape.P, shape.queries
    ss = torch.tensor(shape.levels, dtype=torch.long)
    lsi = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
    value = torch.randn(N, shape.S, M, D, generator=g)
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g)
    attn = torch.rand(N, Lq, M, L * P, generator=g).softmax(-1).view(N, Lq, M, L, P)
    return tuple(t.to(device) if not t.dtype.is_floating_point else t.to(device, dtype)
                 for t in (value, ss, lsi, loc, attn))


def _timeit(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of fn() in milliseconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _measure(fn, inputs, device, warmup, repeats) -> tuple[float, float]:
    value, ss, lsi, loc, attn = inputs

    def forward():
        with torch.no_grad():
            fn(value, ss, lsi, loc, attn)

    leaves = [t.detach().requires_grad_() for t in (value, loc, attn)]
    grad = torch.ones(value.shape[0], loc.shape[1], value.shape[2] * value.shape[3],
                      dtype=value.dtype, device=device)

    def forward_backward():
        out = fn(leaves[0], ss, lsi, leaves[1], leaves[2])
        out.backward(grad)
        for t in leaves:
            t.grad = None

    return (_timeit(forward, device, warmup, repeats),
            _timeit(forward_backward, device, warmup, repeats))


def run_ops_benchmark(shapes=("A", "B"), dtypes=("float32",), device: str = "cpu",
                      threads: int | None = None, repeats: int = 7, warmup: int = 2,
                      verbose: bool = True) -> list[dict]:
    """Time reference and compiled op; returns one dict per (shape, dtype, backend)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    say = print if verbose else (lambda *a, **k: None)
    kernel = ops.backend(dev)  # builds the extension if needed
    rows: list[dict] = []
    try:
        for name in shapes:
            shape = SHAPES[name]
            if shape.gpu_only and dev.type != "cuda":
                say(f"shape {name}: skipped on {dev.type} (GPU only: the reference alone takes "
                    "seconds per call on a CPU)")
                continue
            say(f"\nshape {name}  ({shape.describe()})  device {dev}, "
                f"{torch.get_num_threads()} threads")
            say(f"{'dtype':10s} {'backend':14s} {'fwd ms':>9s} {'fwd+bwd ms':>11s} "
                f"{'fwd x':>7s} {'fwd+bwd x':>10s}")
            for dt_name in dtypes:
                dtype = getattr(torch, dt_name)
                inputs = make_inputs(shape, dtype, dev)
                impls = [("reference", ops.ms_deform_attn_reference)]
                if kernel.startswith("compiled"):
                    impls.append((kernel, ops.ms_deform_attn))
                ref_times = None
                for backend_name, fn in impls:
                    fwd, fb = _measure(fn, inputs, dev, warmup, repeats)
                    ref_times = ref_times or (fwd, fb)
                    row = dict(shape=name, dtype=dt_name, backend=backend_name, device=dev.type,
                               threads=torch.get_num_threads(), fwd_ms=fwd, fwd_bwd_ms=fb,
                               speedup_fwd=ref_times[0] / fwd, speedup_fwd_bwd=ref_times[1] / fb)
                    rows.append(row)
                    say(f"{dt_name:10s} {backend_name:14s} {fwd:9.2f} {fb:11.2f} "
                        f"{row['speedup_fwd']:6.1f}x {row['speedup_fwd_bwd']:9.1f}x")
            if not kernel.startswith("compiled"):
                say(f"(no compiled kernel: {kernel})")
    finally:
        torch.set_num_threads(old_threads)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stkit.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["ops"], help="what to benchmark")
    parser.add_argument("--shapes", default="A,B", help="comma list of T, A, B, C")
    parser.add_argument("--dtypes", default="float32",
                        help="comma list of float32, float64, float16, bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    shapes = [s.strip().upper() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; choose from {list(SHAPES)}")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "float64", "float16", "bfloat16")]
    if bad:
        parser.error(f"unknown dtype(s) {bad}")
    rows = run_ops_benchmark(shapes, dtypes, args.device, args.threads, args.repeats,
                             args.warmup)
    if args.json:
        meta = dict(torch=torch.__version__, device=args.device, backend=ops.backend(),
                    threads=args.threads or torch.get_num_threads())
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
