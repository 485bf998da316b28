"""``python -m stkit bench ops``: times the deformable-attention op against a roofline.

For each shape and dtype it times the grid_sample reference and the compiled kernel (if
built for the device) in the same run: forward alone (under no_grad) and forward +
backward, the backends timed in turns (``_measure``), each figure a median over repeats
after warm-up (``stkit.ops.timing``), and prints the speedup over the reference.
In the same run it measures the machine's two limits, so that every figure says how far
it is from them (the roofline):
    copy GB/s   a 64 MB tensor copy (bytes read + written per second), the memory limit
    GFMA/s      a 1024^3 matmul in the benchmarked dtype, n^3 multiply-adds per second,
                the arithmetic limit
Both run with the benchmark's thread count. This is a script, not a test: timings depend
on the machine and on what else runs on it; ratios measured in one run vary less.

Byte and sample model (``work``): a *sample* is one bilinear point, one (n, q, m, l, p);
it blends 4 corner rows of D channels, i.e. 4*D multiply-adds forward and about twice that
backward (the dot product <grad_out, row> and the scatter into grad_value), so
    FMA limit, forward     samples/s <= GFMA/s / (4 D)
    FMA limit, fwd + bwd   samples/s <= GFMA/s / (12 D)   (forward, then backward)
The bytes that must move at least once (element size e):
    forward    rows touched * D * e            (the distinct value rows any corner reads,
                                                counted exactly from the locations)
               + locations + weights + output
    fwd + bwd  forward, then again the rows touched, locations, weights, and grad_out read,
               grad_value written whole (N*S*M*D*e), grad locations and weights written
Achieved GB/s = those bytes / time; "%bw" and "%fma" are the achieved fraction of each
limit. A kernel is close to the roofline when one of the two is near 100%.

Shapes (M=8 heads, D=32 channels, P=4 points unless noted):
    T  tiny smoke case: N=1, levels 16x16, 8x8, Lq=S, M=2, D=8, P=2
    A  encoder-like: N=2, levels 64x64, 32x32, 16x16, 8x8, Lq=S=5440
    B  decoder-like: same value as A, Lq=300 queries
    C  Deformable DETR encoder at 800x1333 (levels 100x167, 50x84, 25x42, 13x21),
       N=2, Lq=S; GPU only (the reference alone takes seconds per call on a CPU)
    stnet-*  the calls of the kit's STNet quick and paper recipes (``stkit.stnet.bench.op_shapes``,
             given to this module by the command line: ops knows no paper)
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass

import torch

from .dispatch import backend
from .op import ms_deform_attn
from .reference import ms_deform_attn_reference
from .timing import BUDGET_S, ROUNDS, keep_freed_memory, timeit

__all__ = ["SHAPES", "BenchShape", "make_inputs", "work", "roofline", "run_ops_benchmark",
           "add_arguments", "run_from_args"]


@dataclass(frozen=True)
class BenchShape:
    name: str
    N: int                                # batch
    levels: tuple[tuple[int, int], ...]   # (H, W) of each level (or pseudo-level)
    Lq: int | None                        # queries; None: Lq = S (encoder self-attention)
    M: int = 8                            # heads
    D: int = 32                           # channels per head
    P: int = 4                            # points per level
    gpu_only: bool = False                # the CPU reference would take too long
    note: str = ""                        # what the shape stands for

    @property
    def S(self) -> int:
        return sum(h * w for h, w in self.levels)

    @property
    def queries(self) -> int:
        return self.S if self.Lq is None else self.Lq

    def describe(self) -> str:
        lv = ", ".join(f"{h}x{w}" for h, w in dict.fromkeys(self.levels))
        rep = len(self.levels) // max(len(dict.fromkeys(self.levels)), 1)
        lv = f"{rep} x ({lv})" if rep > 1 else lv
        return (f"N={self.N}, levels {lv}, Lq={self.queries}, M={self.M}, D={self.D}, "
                f"P={self.P}" + (f"; {self.note}" if self.note else ""))


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


def _rows_touched(value, ss, lsi, loc) -> int:
    """Distinct (n, row, m) value rows that some in-map corner of some point reads."""
    N, S, M, _ = value.shape
    total = 0
    for n in range(N):  # one batch entry at a time keeps the index tensors small
        hw = ss.to(loc.device, torch.float64)
        px = loc[n, ..., 0].double() * hw[:, 1, None] - 0.5  # (Lq, M, L, P)
        py = loc[n, ..., 1].double() * hw[:, 0, None] - 0.5
        x0, y0 = px.floor().long(), py.floor().long()
        W, H = ss[:, 1].to(loc.device)[:, None], ss[:, 0].to(loc.device)[:, None]
        start = lsi.to(loc.device)[:, None]
        m = torch.arange(M, device=loc.device)[None, :, None, None]
        seen = torch.zeros(S * M, dtype=torch.bool, device=loc.device)
        for dy in (0, 1):
            for dx in (0, 1):
                x, y = x0 + dx, y0 + dy
                ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
                seen[((start + y * W + x) * M + m)[ok]] = True
        total += int(seen.sum())
    return total


def work(shape: BenchShape, inputs) -> dict:
    """Samples, multiply-adds and minimum bytes of one call (see the module docstring)."""
    value, ss, lsi, loc, attn = inputs
    e = value.element_size()
    N, S, M, D = value.shape
    samples = loc[..., 0].numel()                          # N * Lq * M * L * P
    rows = _rows_touched(value, ss, lsi, loc)
    small = (loc.numel() + attn.numel()) * e               # locations + weights
    out = N * shape.queries * M * D * e
    fwd = rows * D * e + small + out
    bwd = rows * D * e + small + out + N * S * M * D * e + small  # + grads written
    return dict(samples=samples, rows=rows, fwd_bytes=fwd, fwd_bwd_bytes=fwd + bwd,
                fwd_fma=4 * D * samples, fwd_bwd_fma=12 * D * samples)


def roofline(device: torch.device, dtype: torch.dtype) -> dict:
    """Measured copy bandwidth (GB/s, read + write) and matmul multiply-adds (GFMA/s).

    Sized to take well under a second on a CPU: a 64 MB copy (beyond any CPU cache) and a
    1024^3 matmul; on a GPU 256 MB and 4096^3.
    """
    gpu = device.type == "cuda"
    numel, n = (64 << 20, 4096) if gpu else (16 << 20, 1024)
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    copy_ms = timeit(lambda: dst.copy_(src), device, 2, 7)
    a = torch.randn(n, n, device=device).to(dtype)
    mm_ms = timeit(lambda: a @ a, device, 1, 5)
    del src, dst
    return dict(copy_gbs=2 * numel * 4 / copy_ms / 1e6, gfmas=n ** 3 / mm_ms / 1e6)


def _calls(fn, inputs, device) -> dict:
    """The two timed calls of one backend: forward (no_grad) and forward + backward."""
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

    return {"fwd": forward, "fwd_bwd": forward_backward}


def _measure(fns: dict, inputs, device, warmup, repeats) -> dict:
    """{backend: (forward ms, forward + backward ms)}, the backends timed in turns: ROUNDS
    rounds of each, a full warm-up in the first and one call after the others ran."""
    calls = {name: _calls(fn, inputs, device) for name, fn in fns.items()}
    per_round = max(1, -(-repeats // ROUNDS))
    result: dict = {name: [] for name in fns}
    for mode in ("fwd", "fwd_bwd"):
        times: dict = {name: [] for name in fns}
        for r in range(ROUNDS):
            for name, c in calls.items():
                times[name].append(timeit(c[mode], device, warmup if r == 0 else 1, per_round,
                                          budget_s=BUDGET_S / ROUNDS,
                                          warm_s=None if r == 0 else 0.0))
        for name in fns:
            result[name].append(statistics.median(times[name]))
    return {name: tuple(v) for name, v in result.items()}


def _row(name, dt_name, backend, dev, fwd, fb, ref, wk, lim) -> dict:
    """One result row: times, speedups, and the roofline figures."""
    row = dict(shape=name, dtype=dt_name, backend=backend, device=dev.type,
               threads=torch.get_num_threads(), fwd_ms=fwd, fwd_bwd_ms=fb,
               speedup_fwd=ref[0] / fwd, speedup_fwd_bwd=ref[1] / fb)
    for key, ms in (("fwd", fwd), ("fwd_bwd", fb)):
        gbs = wk[f"{key}_bytes"] / ms / 1e6
        msps = wk["samples"] / ms / 1e3  # million samples per second
        msps_limit = lim["gfmas"] * 1e3 * wk["samples"] / wk[f"{key}_fma"]
        row |= {f"{key}_gbs": gbs, f"{key}_pct_bw": 100 * gbs / lim["copy_gbs"],
                f"{key}_msps": msps, f"{key}_pct_fma": 100 * msps / msps_limit}
    return row


_HEAD = (f"{'dtype':9s} {'backend':13s}|{'fwd ms':>9s} {'x':>5s} {'GB/s':>6s} {'%bw':>4s} "
         f"{'Msmp/s':>7s} {'%fma':>4s} |{'f+b ms':>9s} {'x':>5s} {'GB/s':>6s} {'%bw':>4s} "
         f"{'Msmp/s':>7s} {'%fma':>4s}")


def _line(r: dict) -> str:
    parts = [f"{r['dtype']:9s} {r['backend']:13s}"]
    for k in ("fwd", "fwd_bwd"):
        parts.append(f"{r[k + '_ms']:9.2f} {r['speedup_' + k]:4.1f}x {r[k + '_gbs']:6.1f} "
                     f"{r[k + '_pct_bw']:3.0f}% {r[k + '_msps']:7.1f} {r[k + '_pct_fma']:3.0f}%")
    return "|".join(parts) + " "


def run_ops_benchmark(shapes=("A", "B"), dtypes=("float32",), device: str = "cpu",
                      threads: int | None = None, repeats: int = 7, warmup: int = 2,
                      verbose: bool = True) -> list[dict]:
    """Time reference and compiled op; returns one dict per (shape, dtype, backend).

    ``shapes``: names of :data:`SHAPES` or :class:`BenchShape` objects."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    say = print if verbose else (lambda *a, **k: None)
    kernel = backend(dev)  # builds the extension if needed
    rows: list[dict] = []
    try:
        limits = {dt: roofline(dev, getattr(torch, dt)) for dt in dtypes}
        say(f"device {dev}, {torch.get_num_threads()} threads, kernel: {kernel}")
        for dt, lim in limits.items():
            say(f"limits ({dt}): copy {lim['copy_gbs']:.1f} GB/s, matmul "
                f"{lim['gfmas']:.1f} GFMA/s")
        for shape in shapes:
            shape = SHAPES[shape] if isinstance(shape, str) else shape  # a name of SHAPES, or a BenchShape
            name = shape.name
            if shape.gpu_only and dev.type != "cuda":
                say(f"shape {name}: skipped on {dev.type} (GPU only: the reference alone takes "
                    "seconds per call on a CPU)")
                continue
            say(f"\nshape {name}  ({shape.describe()})")
            say(_HEAD)
            for dt_name in dtypes:
                inputs = make_inputs(shape, getattr(torch, dt_name), dev)
                wk = work(shape, inputs)
                impls = {"reference": ms_deform_attn_reference}
                if kernel.startswith("compiled"):
                    impls[kernel] = ms_deform_attn
                timed = _measure(impls, inputs, dev, warmup, repeats)
                for backend_name, (fwd, fb) in timed.items():
                    rows.append(_row(name, dt_name, backend_name, dev, fwd, fb,
                                     timed["reference"], wk, limits[dt_name]))
                    say(_line(rows[-1]))
            if not kernel.startswith("compiled"):
                say(f"(no compiled kernel: {kernel})")
    finally:
        torch.set_num_threads(old_threads)
    return rows


def add_arguments(parser: argparse.ArgumentParser, shapes: dict[str, BenchShape]) -> None:
    """The benchmark's options on a command line's sub-parser (``python -m stkit bench ops``)."""
    parser.add_argument("--shapes", default="A,B", help=f"comma list of {', '.join(shapes)}")
    parser.add_argument("--dtypes", default="float32",
                        help="comma list of float32, float64, float16, bfloat16")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the results here")


def run_from_args(args, shapes: dict[str, BenchShape]) -> int:
    """Run the benchmark the parsed options ask for over ``shapes`` (name -> shape)."""
    by_key = {k.lower(): k for k in shapes}
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in names if s.lower() not in by_key]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; choose from {list(shapes)}")
    chosen = [shapes[by_key[s.lower()]] for s in names]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "float64", "float16", "bfloat16")]
    if bad:
        raise ValueError(f"unknown dtype(s) {bad}")
    kept = keep_freed_memory()
    print("allocator: " + ("freed memory kept for reuse (glibc mallopt, see keep_freed_memory)"
                           if kept else "default (freed memory may fault in again)"))
    rows = run_ops_benchmark(chosen, dtypes, args.device, args.threads, args.repeats, args.warmup)
    if args.json:
        meta = dict(torch=torch.__version__, device=args.device, backend=backend(),
                    threads=args.threads or torch.get_num_threads(), freed_memory_kept=kept)
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=2)
        print(f"\nwrote {args.json}")
    return 0
