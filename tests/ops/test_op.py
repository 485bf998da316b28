"""Tests of the deformable-attention op: compiled kernel vs the grid_sample reference.

The reference itself is first checked against a direct loop over pixels; the kernel is
then held against the reference in float64 (forward and the three gradients), with a
gradient check, half-precision tolerances, NaN semantics, the custom-op machinery
(opcheck, torch.compile without graph breaks), input validation and the backend switch.
The first test run builds the extension (about half a minute; cached afterwards).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import stkit.ops as ops
from stkit.ops import dispatch
from stkit.ops.reference import ms_deform_attn_reference as reference

ROOT = Path(__file__).resolve().parents[2]
FORCED_REFERENCE = os.environ.get(ops.ENV_VAR, "").lower() == "reference"


# ------------------------------------------------------------------------------ helpers

def level_tables(shapes):
    ss = torch.tensor(shapes, dtype=torch.long)
    lsi = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
    return ss, lsi, int((ss[:, 0] * ss[:, 1]).sum())


def make_locations(shapes, N, Lq, M, P, gen, outside=True, margin=0.1):
    """(N, Lq, M, L, P, 2) locations whose pixel coordinates stay `margin` away from
    integers (where the location gradient jumps); some fall outside the map."""
    cols = []
    for h, w in shapes:
        xy = []
        for size in (w, h):
            lo, hi = (-2, size + 1) if outside else (0, size - 1)
            whole = torch.randint(lo, max(hi, lo + 1), (N, Lq, M, P), generator=gen)
            frac = margin + (1 - 2 * margin) * torch.rand(N, Lq, M, P, generator=gen,
                                                          dtype=torch.float64)
            xy.append((whole + frac + 0.5) / size)  # pixel p <-> loc (p + 0.5) / size
        cols.append(torch.stack(xy, -1))
    return torch.stack(cols, 3)


def make_case(shapes, N, Lq, M, D, P, seed=0, outside=True, margin=0.1):
    gen = torch.Generator().manual_seed(seed)
    ss, lsi, S = level_tables(shapes)
    value = torch.randn(N, S, M, D, generator=gen, dtype=torch.float64)
    loc = make_locations(shapes, N, Lq, M, P, gen, outside, margin)
    attn = torch.rand(N, Lq, M, len(shapes) * P, generator=gen, dtype=torch.float64)
    attn = attn.softmax(-1).view(N, Lq, M, len(shapes), P)
    grad = torch.randn(N, Lq, M * D, generator=gen, dtype=torch.float64)
    return value, ss, lsi, loc, attn, grad


def forward_and_grads(fn, value, ss, lsi, loc, attn, grad):
    leaves = [t.detach().clone().requires_grad_() for t in (value, loc, attn)]
    out = fn(leaves[0], ss, lsi, leaves[1], leaves[2])
    return (out, *torch.autograd.grad(out, leaves, grad))


@pytest.fixture(scope="module")
def compiled():
    """The compiled CPU kernel must be in use (a failed build is a failure here)."""
    if FORCED_REFERENCE:
        pytest.skip(f"{ops.ENV_VAR}=reference")
    state = dispatch.resolve()
    assert state.compiled, f"compiled op unavailable: {state.reason}"
    return state


# --------------------------------------------------------- the reference's own check

def naive_sample(value_l, H, W, x, y):
    """Bilinear sample of value_l (H*W, D) at normalised (x, y), zero outside."""
    px, py = x * W - 0.5, y * H - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(value_l.shape[-1], dtype=value_l.dtype)
    for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
        if 0 <= yy < H and 0 <= xx < W:
            wgt = (1 - abs(px - xx)) * (1 - abs(py - yy))
            out += wgt * value_l[yy * W + xx]
    return out


def test_reference_matches_direct_loop():
    shapes = [(3, 4), (2, 2), (1, 1)]
    value, ss, lsi, loc, attn, _ = make_case(shapes, 2, 3, 2, 5, 2, seed=1)
    out = reference(value, ss, lsi, loc, attn)
    N, Lq, M, L, P, _ = loc.shape
    for n in range(N):
        for q in range(Lq):
            for m in range(M):
                acc = torch.zeros(value.shape[-1], dtype=value.dtype)
                for lvl, (h, w) in enumerate(shapes):
                    vl = value[n, lsi[lvl]:lsi[lvl] + h * w, m]
                    for p in range(P):
                        x, y = loc[n, q, m, lvl, p].tolist()
                        acc += attn[n, q, m, lvl, p] * naive_sample(vl, h, w, x, y)
                D = value.shape[-1]
                torch.testing.assert_close(out[n, q, m * D:(m + 1) * D], acc)


# ------------------------------------------------------------------ compiled vs reference

def test_gradcheck_float64(compiled):
    value, ss, lsi, loc, attn, _ = make_case([(3, 4), (2, 1), (1, 1)], 1, 2, 2, 2, 2, seed=2)
    inputs = (value.requires_grad_(), ss, lsi, loc.requires_grad_(), attn.requires_grad_())
    assert torch.autograd.gradcheck(ops.ms_deform_attn, inputs, eps=1e-6, atol=1e-6)


CASES = [  # (level shapes, N, Lq, M, D, P)
    ([(1, 1)], 1, 5, 1, 1, 1),
    ([(6, 4)], 3, 7, 2, 3, 5),
    ([(5, 7), (3, 2)], 1, 13, 8, 8, 2),
    ([(8, 8), (4, 4), (2, 2)], 3, 20, 1, 32, 4),
    ([(9, 5), (1, 1), (3, 6), (2, 1)], 1, 9, 2, 33, 3),
    ([(7, 3), (4, 9), (1, 1), (2, 2)], 3, 40, 8, 1, 1),
    ([(10, 12), (5, 6)], 1, 3, 2, 32, 4),          # few queries: kernel reads value directly
    ([(6, 6), (3, 3)], 1, 45, 1, 24, 4),           # many queries per row: staged head copy
    ([(16, 16), (8, 8), (4, 4), (2, 2)], 1, 340, 8, 16, 4),
    ([(4, 4)], 1, 1200, 1, 33, 2),                 # one head: query chunks, private buffers
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}-N{}-Lq{}-M{}-D{}-P{}".format(
    len(c[0]), *c[1:]))
def test_matches_reference(compiled, case, dtype):
    shapes, N, Lq, M, D, P = case
    value, ss, lsi, loc, attn, grad = make_case(shapes, N, Lq, M, D, P, seed=len(shapes) + D)
    inputs = [t.to(dtype) for t in (value, loc, attn, grad)]
    got = forward_and_grads(ops.ms_deform_attn, inputs[0], ss, lsi, *inputs[1:])
    want = forward_and_grads(reference, value, ss, lsi, loc, attn, grad)  # float64 truth
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for name, g, w in zip(("output", "grad_value", "grad_loc", "grad_attn"), got, want):
        assert g.dtype == dtype, name
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g.double() / scale, w / scale, **tol, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("Lq", [2, 30], ids=["few-queries", "many-queries"])
def test_half_precision(compiled, dtype, Lq):
    shapes = [(8, 6), (4, 3), (1, 1)]
    value, ss, lsi, loc, attn, grad = make_case(shapes, 2, Lq, 2, 16, 3, seed=5, margin=0.2)
    rounded = [t.to(dtype) for t in (value, loc, attn, grad)]
    got = forward_and_grads(ops.ms_deform_attn, rounded[0], ss, lsi, *rounded[1:])
    # Truth: the float64 reference of the same rounded inputs.
    want = forward_and_grads(reference, rounded[0].double(), ss, lsi,
                             *[t.double() for t in rounded[1:]])
    eps = torch.finfo(dtype).eps
    for name, g, w in zip(("output", "grad_value", "grad_loc", "grad_attn"), got, want):
        assert g.dtype == dtype, name
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g.double() / scale, w / scale, rtol=4 * eps, atol=4 * eps,
                                   msg=name)


def test_thread_count_does_not_change_results(compiled):
    # One head and enough work to split its queries across threads (private buffers).
    value, ss, lsi, loc, attn, grad = make_case([(6, 5), (3, 3)], 1, 2000, 1, 8, 3, seed=6)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            results.append(forward_and_grads(ops.ms_deform_attn, value, ss, lsi, loc, attn,
                                             grad))
    finally:
        torch.set_num_threads(old)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def expect_plan(value, loc, value_rows: str) -> None:
    """The CPU kernel's plan for these inputs reads value rows as `value_rows` says."""
    N, S, M, D = value.shape
    plan = torch.ops.stkit_ext.cpu_plan(N, S, M, D, loc.shape[1], loc.shape[3], loc.shape[4],
                                        value.dtype)
    assert plan.startswith(f"value={value_rows},"), plan


# Few queries read value rows in place; many read a staged copy of each head, whose maps
# have a zero border (border points take no slow path there): both must agree here.
ROW_PLANS = [(6, "gather"), (60, "stage")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("Lq,value_rows", ROW_PLANS, ids=[p for _, p in ROW_PLANS])
def test_non_finite_locations_count_as_outside(compiled, dtype, Lq, value_rows):
    value, ss, lsi, loc, attn, grad = make_case([(5, 6), (2, 3)], 2, Lq, 2, 4, 3, seed=7)
    expect_plan(value.to(dtype), loc, value_rows)
    nan, inf = float("nan"), float("inf")
    odd = {(0, 0, 0, 0, 0): [nan, 0.5], (0, 1, 1, 1, 2): [0.3, nan], (1, 2, 0, 0, 1): [nan, nan],
           (1, 3, 1, 1, 0): [inf, 0.2], (1, 4, 0, 0, 2): [0.4, -inf],
           (0, 5, 1, 0, 0): [1e30, 0.5], (1, 5, 1, 0, 1): [3e38, 0.5]}  # huge but finite
    for idx, xy in odd.items():
        loc[idx] = torch.tensor(xy)
    inputs = [t.to(dtype) for t in (value, loc, attn, grad)]
    got = forward_and_grads(ops.ms_deform_attn, inputs[0], ss, lsi, *inputs[1:])
    want = forward_and_grads(reference, inputs[0], ss, lsi, *inputs[1:])
    for name, g, w in zip(("output", "grad_value", "grad_loc", "grad_attn"), got, want):
        assert torch.isfinite(g).all() and torch.isfinite(w).all(), name
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=name)
    for idx in odd:  # such a point contributes nothing and gets no gradient
        assert not got[2][idx].any() and got[3][idx] == 0
    # The same as moving those points far outside the map.
    far = loc.clone()
    for idx in odd:
        far[idx] = torch.tensor([-5.0, -5.0])
    torch.testing.assert_close(got[0], ops.ms_deform_attn(inputs[0], ss, lsi, far.to(dtype),
                                                          inputs[2]))


@pytest.mark.parametrize("Lq,value_rows", ROW_PLANS, ids=[p for _, p in ROW_PLANS])
def test_nan_attention_weight_propagates(compiled, Lq, value_rows):
    """A NaN weight poisons its (query, head) output even on a point outside the map,
    as weight * sample does in the reference."""
    value, ss, lsi, loc, attn, _ = make_case([(4, 4)], 1, Lq, 1, 3, 2, seed=15)
    expect_plan(value, loc, value_rows)
    loc[0, 0, 0, 0, 0] = torch.tensor([-4.0, -4.0])
    attn[0, 0, 0, 0, 0] = float("nan")
    got = ops.ms_deform_attn(value, ss, lsi, loc, attn)
    want = reference(value, ss, lsi, loc, attn)
    torch.testing.assert_close(got, want, equal_nan=True)
    assert got[0, 0].isnan().all() and not got[0, 1].isnan().any()


def test_points_far_outside_give_zero(compiled):
    value, ss, lsi, loc, attn, grad = make_case([(4, 4)], 1, 3, 1, 2, 2, seed=8)
    loc.fill_(-3.0)
    out, gv, gl, ga = forward_and_grads(ops.ms_deform_attn, value, ss, lsi, loc, attn, grad)
    for t in (out, gv, gl, ga):
        assert torch.count_nonzero(t) == 0


def test_empty_query_set(compiled):
    value, ss, lsi, loc, attn, _ = make_case([(3, 3)], 2, 0, 2, 4, 2, seed=9)
    out = ops.ms_deform_attn(value, ss, lsi, loc, attn)
    assert out.shape == (2, 0, 8)


# ------------------------------------------------------- CPU strategies, each forced

# The CPU kernel picks a strategy per call from the shape (cuda_ops/ms_deform_attn_cpu.cpp,
# make_plan): value rows gathered in place (in point order, or, from a big value tensor,
# in row order after sorting the points: "sweep") or staged per head, grad rows accumulated in
# place or in a per-thread buffer, query chunks with private buffers when heads are few,
# one thread for small calls. Each case forces one choice (checked through the kernel's
# own cpu_plan) and holds the result against the float64 reference.
STRATEGIES = [  # (expected plan, level shapes, N, Lq, M, D, P, dtype)
    ("value=gather, grad=in-place, chunks=1, workers=2",
     [(40, 40), (20, 20)], 2, 60, 2, 32, 4, torch.float64),   # few queries, big map
    ("value=stage, grad=local, chunks=1, workers=2",
     [(6, 6), (3, 3)], 2, 200, 2, 24, 4, torch.float64),      # many queries per row
    ("value=gather, grad=local, chunks=1, workers=2",
     [(40, 40), (20, 20)], 2, 80, 2, 16, 4, torch.bfloat16),  # half type, few queries
    ("value=gather, grad=in-place, chunks=1, workers=1",
     [(258, 256)], 1, 4, 1, 32, 2, torch.float16),            # half, head too big to buffer
    ("value=stage, grad=local, chunks=2, workers=2",
     [(4, 4)], 1, 1200, 1, 33, 2, torch.float32),             # one head, many queries
    ("value=gather, grad=in-place, chunks=2, workers=2",
     [(30, 30)], 1, 400, 1, 32, 4, torch.float64),            # one head, few per row
    ("value=gather, grad=local, chunks=2, workers=2",
     [(30, 30)], 1, 400, 1, 32, 4, torch.bfloat16),           # ... in a half type
    ("value=gather, grad=in-place, chunks=1, workers=1",
     [(3, 3)], 1, 2, 1, 4, 1, torch.float64),                 # too small to split
    ("value=sweep, grad=in-place, chunks=1, workers=2",
     [(128, 128), (64, 64)], 2, 50, 8, 32, 4, torch.float32), # few queries, value >= 32 MB
    ("value=sweep, grad=in-place, chunks=2, workers=2",
     [(192, 256), (96, 128)], 1, 300, 2, 40, 4, torch.float64), # ... odd D, split heads
]


@pytest.mark.parametrize("case", STRATEGIES, ids=lambda c: "{}-{}".format(
    c[0].replace(", ", "-").replace("value=", "").replace("grad=", ""), str(c[-1])[6:]))
def test_each_cpu_strategy_matches_reference(compiled, case):
    plan, shapes, N, Lq, M, D, P, dtype = case
    value, ss, lsi, loc, attn, grad = make_case(shapes, N, Lq, M, D, P, seed=11, margin=0.2)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        S, L = value.shape[1], len(shapes)
        assert torch.ops.stkit_ext.cpu_plan(N, S, M, D, Lq, L, P, dtype) == plan
        rounded = [t.to(dtype) for t in (value, loc, attn, grad)]
        got = forward_and_grads(ops.ms_deform_attn, rounded[0], ss, lsi, *rounded[1:])
    finally:
        torch.set_num_threads(old)
    # Truth: the float64 reference of the same (rounded) inputs.
    want = forward_and_grads(reference, rounded[0].double(), ss, lsi,
                             *[t.double() for t in rounded[1:]])
    tol = {torch.float64: 1e-9, torch.float32: 2e-4}.get(dtype, 4 * torch.finfo(dtype).eps)
    for name, g, w in zip(("output", "grad_value", "grad_loc", "grad_attn"), got, want):
        assert g.dtype == dtype, name
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g.double() / scale, w / scale, rtol=tol, atol=tol, msg=name)


# --------------------------------------------------------------- custom op and compile

def test_opcheck(compiled):
    from stkit.ops.custom_op import ms_deform_attn_op

    value, ss, lsi, loc, attn, _ = make_case([(4, 3), (2, 2)], 2, 5, 2, 4, 2, seed=10)
    args = (value.requires_grad_(), ss, lsi, loc.requires_grad_(), attn.requires_grad_())
    torch.library.opcheck(ms_deform_attn_op, args)


def test_torch_compile_full_graph(compiled):
    value, ss, lsi, loc, attn, grad = make_case([(6, 5), (3, 2)], 2, 7, 2, 4, 2, seed=11)

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8, dtype=torch.float64)

        def forward(self, v, lo, at):
            return self.proj(ops.ms_deform_attn(v, ss, lsi, lo, at)).tanh()

    block = Block()
    torch._dynamo.reset()
    # fullgraph=True: any graph break raises instead of silently splitting the graph.
    compiled_block = torch.compile(block, fullgraph=True, backend="aot_eager")
    eager = forward_and_grads(lambda v, _s, _l, lo, at: block(v, lo, at),
                              value, ss, lsi, loc, attn, grad)
    traced = forward_and_grads(lambda v, _s, _l, lo, at: compiled_block(v, lo, at),
                               value, ss, lsi, loc, attn, grad)
    for a, b in zip(eager, traced):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------- bad inputs

def _good():
    value, ss, lsi, loc, attn, _ = make_case([(4, 3), (2, 2)], 2, 5, 2, 4, 2, seed=12)
    return dict(value=value, spatial_shapes=ss, level_start_index=lsi,
                sampling_locations=loc, attention_weights=attn)


BAD = {
    "value rank": (lambda a: a.update(value=a["value"][0]), "value must be (N, S, M, D)"),
    "locations rank": (lambda a: a.update(sampling_locations=a["sampling_locations"][..., 0]),
                       "sampling_locations must be"),
    "weights rank": (lambda a: a.update(attention_weights=a["attention_weights"][0]),
                     "attention_weights must be"),
    "levels mismatch": (lambda a: a.update(spatial_shapes=a["spatial_shapes"][:1]),
                        "levels disagree"),
    "level_start mismatch": (lambda a: a.update(level_start_index=a["level_start_index"][:1]),
                             "levels disagree"),
    "S mismatch": (lambda a: a.update(value=a["value"][:, :-1]), "sum of H*W"),
    "bad level_start": (lambda a: a.update(level_start_index=torch.tensor([0, 3])),
                        "level_start_index[1]"),
    "float spatial_shapes": (lambda a: a.update(spatial_shapes=a["spatial_shapes"].float()),
                             "spatial_shapes must be an integer tensor"),
    "int value": (lambda a: a.update(value=a["value"].long()),
                  "value must be a floating-point tensor"),
    "dtype mismatch": (lambda a: a.update(sampling_locations=a["sampling_locations"].float()),
                       "must share a dtype"),
    "N mismatch": (lambda a: a.update(attention_weights=a["attention_weights"][:1],
                                      sampling_locations=a["sampling_locations"][:1]),
                   "does not match value"),
    # "meta" stands in for a GPU: any device mix is refused before a kernel runs.
    "device mix": (lambda a: a.update(value=a["value"].to("meta")),
                   "sampling_locations is on cpu but value is on meta"),
    "not a tensor": (lambda a: a.update(attention_weights=[1.0]), None),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_inputs_raise_clear_errors(name):
    args = _good()
    mutate, message = BAD[name]
    mutate(args)
    if message is None:
        with pytest.raises(TypeError, match="attention_weights must be a torch.Tensor"):
            ops.ms_deform_attn(**args)
        return
    with pytest.raises(ValueError, match=re.escape(message)):
        ops.ms_deform_attn(**args)


def test_kernel_checks_bounds_itself(compiled):
    """Called directly, the raw kernel refuses level tables that would read out of bounds."""
    args = _good()
    with pytest.raises(RuntimeError, match="level_start_index"):
        torch.ops.stkit_ext.ms_deform_attn_forward(
            args["value"], args["spatial_shapes"], torch.tensor([0, 100]),
            args["sampling_locations"], args["attention_weights"])


# --------------------------------------------------------------------- backend switch

def _run_python(code: str, **env_overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_env_var_forces_reference():
    proc = _run_python("""
        import torch, stkit.ops as ops
        from stkit.ops.reference import ms_deform_attn_reference as ref
        v = torch.randn(1, 5, 1, 2); ss = torch.tensor([[1, 1], [2, 2]]); lsi = torch.tensor([0, 1])
        loc = torch.rand(1, 3, 1, 2, 1, 2); w = torch.rand(1, 3, 1, 2, 1)
        assert torch.equal(ops.ms_deform_attn(v, ss, lsi, loc, w), ref(v, ss, lsi, loc, w))
        try:  # nothing was built or loaded
            torch.ops.stkit_ext.ms_deform_attn_forward
            print("extension loaded")
        except (AttributeError, RuntimeError):
            pass
        print(ops.backend())
    """, STKIT_OPS_BACKEND="reference")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("reference (forced by STKIT_OPS_BACKEND=reference)")


def test_failed_build_falls_back_with_warning(tmp_path):
    proc = _run_python("""
        import warnings, torch, stkit.ops as ops
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            name = ops.backend()
        v = torch.randn(1, 1, 1, 2); ss = torch.tensor([[1, 1]]); lsi = torch.tensor([0])
        out = ops.ms_deform_attn(v, ss, lsi, torch.full((1, 2, 1, 1, 1, 2), 0.5),
                                 torch.ones(1, 2, 1, 1, 1))
        assert torch.allclose(out, v[0, 0, 0].expand(1, 2, 2))
        print(name); print(any("unavailable" in str(w.message) for w in caught))
    """, STKIT_OPS_BACKEND="auto", STKIT_OPS_BUILD_DIR=str(tmp_path), CXX="/nonexistent/c++")
    assert proc.returncode == 0, proc.stderr
    name, warned = proc.stdout.split("\n")[:2]
    assert name.startswith("reference (build failed") and "/nonexistent/c++" in name
    assert warned == "True"


# ------------------------------------------------------------------------------- CUDA

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_reference(dtype):
    if FORCED_REFERENCE:
        pytest.skip(f"{ops.ENV_VAR}=reference")
    assert ops.backend("cuda") == "compiled-cuda", ops.backend("cuda")
    shapes = [(9, 7), (5, 4), (3, 2), (1, 1)]
    value, ss, lsi, loc, attn, grad = make_case(shapes, 3, 50, 8, 32, 4, seed=13, margin=0.2)
    rounded = [t.to(dtype) for t in (value, loc, attn, grad)]
    dev = [t.cuda() for t in rounded]
    got = forward_and_grads(ops.ms_deform_attn, dev[0], ss.cuda(), lsi.cuda(), *dev[1:])
    want = forward_and_grads(reference, rounded[0].double(), ss, lsi,
                             *[t.double() for t in rounded[1:]])
    tol = {torch.float64: 1e-9, torch.float32: 2e-4}.get(dtype, 4 * torch.finfo(dtype).eps)
    for name, g, w in zip(("output", "grad_value", "grad_loc", "grad_attn"), got, want):
        assert g.dtype == dtype and g.is_cuda, name
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g.double().cpu() / scale, w / scale, rtol=tol, atol=tol,
                                   msg=name)


@pytest.mark.cuda
@cuda
def test_cuda_non_finite_locations_and_any_batch():
    if FORCED_REFERENCE:
        pytest.skip(f"{ops.ENV_VAR}=reference")
    value, ss, lsi, loc, attn, grad = make_case([(5, 6), (2, 3)], 3, 6, 2, 4, 3, seed=14)
    loc[0, 0, 0, 0, 0] = torch.tensor([float("nan"), 0.5])
    loc[2, 1, 1, 1, 1] = torch.tensor([0.5, float("inf")])
    dev = [t.float().cuda() for t in (value, loc, attn, grad)]
    got = forward_and_grads(ops.ms_deform_attn, dev[0], ss.cuda(), lsi.cuda(), *dev[1:])
    host = [t.float() for t in (value, loc, attn, grad)]
    want = forward_and_grads(reference, host[0], ss, lsi, *host[1:])
    for name, g, w in zip(("output", "grad_value", "grad_loc", "grad_attn"), got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-4, atol=1e-4, msg=name)
