"""The CUDA kernel compiles, and its logic is right, on a machine without a GPU.

1. ``test_cuda_kernel_compiles``: ``cuda_ops/ms_deform_attn_cuda.cu`` is compiled to an
   object file with the flags that ``torch.utils.cpp_extension`` gives a CUDA extension,
   for sm_80 (A100) and sm_90 (H100) in one nvcc call, and must be free of warnings.
2. ``test_cuda_kernel_emulated``: the same source, lightly rewritten, is compiled for the
   CPU with every CUDA thread of a block run as a fiber (ucontext). A barrier
   (``__syncthreads``/``__syncwarp``) ends a fiber's phase and each phase runs the fibers
   in a random order, so a missing barrier shows up as a wrong result. Every read through
   the read-only cache and every atomic is bounds-checked. Forward and backward are
   compared with the float64 autograd of ``stkit.ops.reference``, with the sm_90 vector
   atomics and with the scalar atomics of older GPUs. This checks indices, bounds,
   reductions, rounds, channel slabs and half-type conversions; it says nothing about
   speed, real warp scheduling or memory ordering on a GPU.

Both are skipped (with the reason) without nvcc or without torch CUDA support; the
emulation also needs Linux (ucontext) and a host C++ compiler.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import pytest
import torch

from stkit.ops.build import _cpp_extension

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "cuda_ops" / "ms_deform_attn_cuda.cu"
ARCHS = ("80", "90")
TIMEOUT_S = 900


# --------------------------------------------------------------------------------------
# toolchain discovery
# --------------------------------------------------------------------------------------
def _find_nvcc() -> str | None:
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc")
    cuda_home = _cpp_extension().CUDA_HOME
    if cuda_home:
        candidates.append(Path(cuda_home) / "bin" / "nvcc")
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(Path(on_path))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def _require_toolchain() -> str:
    if torch.version.cuda is None:
        pytest.skip("torch was built without CUDA (torch.version.cuda is None)")
    nvcc = _find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    assert SOURCE.is_file(), f"missing {SOURCE}"
    return nvcc


def _torch_include_paths() -> list[str]:
    ce = _cpp_extension()
    try:  # torch >= 2.6: include_paths(device_type="cuda"); older: include_paths(cuda=True)
        paths = ce.include_paths(device_type="cuda")
    except TypeError:
        paths = ce.include_paths(cuda=True)
    except Exception:  # CUDA_HOME unresolved: nvcc adds its own include folder anyway
        paths = ce.include_paths()
    return [p for p in paths if Path(p).is_dir()]


def _cxx_standard() -> str:
    """The -std= torch's extension builder passes to nvcc (C++20 for torch >= 2.10)."""
    ce_source = Path(_cpp_extension().__file__).read_text()
    return "-std=c++20" if "-std=c++20" in ce_source else "-std=c++17"


def _cuda_include_dirs(nvcc: str) -> list[str]:
    """Where nvcc takes cuda_runtime.h from (asked from nvcc itself)."""
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"stkit_nvcc_probe_{os.getpid()}.cu"
    probe.write_text("\n")
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", str(probe)], capture_output=True,
                             text=True, timeout=60)
    finally:
        probe.unlink(missing_ok=True)
    dirs = re.findall(r'-I"?([^"\s]+)"?', "\n".join(
        line for line in (out.stdout + out.stderr).splitlines() if "INCLUDES=" in line))
    return [d for d in dirs if (Path(d) / "cuda_runtime.h").is_file()]


# --------------------------------------------------------------------------------------
# 1. compile for the GPU
# --------------------------------------------------------------------------------------
def nvcc_command(nvcc: str, obj: Path) -> list[str]:
    ce = _cpp_extension()
    cmd = [nvcc, "-c", str(SOURCE), "-o", str(obj)]
    for inc in _torch_include_paths():
        cmd += ["-isystem", inc]
    py_inc = sysconfig.get_path("include", scheme="posix_prefix")
    if py_inc:
        cmd += ["-isystem", py_inc]
    cmd += [
        "-DTORCH_EXTENSION_NAME=stkit_ext_build_check",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        *ce.COMMON_NVCC_FLAGS,  # -D__CUDA_NO_HALF_OPERATORS__ ... --expt-relaxed-constexpr
        "-O3", "-DNDEBUG", "-DWITH_CUDA", "-lineinfo",  # as stkit/ops/build.py
        "--compiler-options", "-fPIC",
        _cxx_standard(),
    ]
    for arch in ARCHS:
        cmd.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    if os.environ.get("CC"):
        cmd = [cmd[0], "-ccbin", os.environ["CC"]] + cmd[1:]
    return cmd


def test_cuda_kernel_compiles(tmp_path):
    nvcc = _require_toolchain()
    obj = tmp_path / "ms_deform_attn_cuda.o"
    cmd = nvcc_command(nvcc, obj)
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"nvcc did not finish within {TIMEOUT_S} s:\n{' '.join(cmd)}")
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode == 0 and obj.is_file(), (
        f"nvcc failed (exit {proc.returncode}):\n$ {' '.join(cmd)}\n\n{output}")

    # Warnings in torch's or CUDA's own headers are not ours; those in the kernel are.
    ours = [line for line in output.splitlines()
            if SOURCE.name in line and re.search(r"warning", line, re.IGNORECASE)]
    assert not ours, "nvcc warnings in the kernel source:\n" + "\n".join(ours) + \
        f"\n\nfull output:\n{output}"


# --------------------------------------------------------------------------------------
# 2. emulate on the CPU
# --------------------------------------------------------------------------------------
EMU_RUNTIME = r"""
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <ucontext.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
#undef __global__
#undef __device__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#undef __align__
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) alignas(n)
using std::max;
using std::min;

struct EmuDim { unsigned x = 0, y = 0, z = 0; };
struct EmuGrid {
  unsigned x, y, z;
  EmuGrid(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
#define dim3 EmuGrid
static EmuDim threadIdx, blockIdx, blockDim;
static std::mt19937 emu_rng(1234);
static long emu_checked = 0, emu_vector_atomics = 0, emu_barriers = 0;
constexpr size_t kEmuSmemBytes = 1 << 20;

// -- fibers: one per CUDA thread of the running block ---------------------------------
struct EmuFiber {
  ucontext_t ctx;
  std::vector<char> stack;
  bool done = false;
  unsigned tid = 0;
};
static ucontext_t emu_scheduler;
static EmuFiber* emu_current = nullptr;
static std::function<void()> emu_body;

static void emu_entry() {
  emu_body();
  emu_current->done = true;
  swapcontext(&emu_current->ctx, &emu_scheduler);
}
static void emu_barrier() {
  ++emu_barriers;
  swapcontext(&emu_current->ctx, &emu_scheduler);
}
inline void emu__syncwarp(unsigned = 0xffffffffu) { emu_barrier(); }
inline void emu__syncthreads() { emu_barrier(); }

// -- bounds-checked memory access -----------------------------------------------------
// A fault is recorded (an exception cannot leave a fiber) and reported after the launch;
// the faulting access reads zero / is dropped.
struct EmuRange { const char* b; const char* e; };
static std::vector<EmuRange> emu_reads, emu_atomics;
static std::string emu_fault;
inline bool emu_ok(const void* p, size_t n, const std::vector<EmuRange>& ranges,
                   const char* what) {
  const char* c = static_cast<const char*>(p);
  if (reinterpret_cast<uintptr_t>(p) % n != 0) {
    if (emu_fault.empty()) emu_fault = std::string("misaligned ") + what;
    return false;
  }
  for (const auto& r : ranges)
    if (c >= r.b && c + n <= r.e) { ++emu_checked; return true; }
  if (emu_fault.empty()) emu_fault = std::string("out-of-bounds ") + what;
  return false;
}
template <typename T> inline T emu__ldg(const T* p) {
  return emu_ok(p, sizeof(T), emu_reads, "read") ? *p : T{};
}
inline float emuatomicAdd(float* a, float v) {
  if (!emu_ok(a, 4, emu_atomics, "atomic")) return 0.f;
  float o = *a; *a = o + v; return o;
}
inline double emuatomicAdd(double* a, double v) {
  if (!emu_ok(a, 8, emu_atomics, "atomic")) return 0.0;
  double o = *a; *a = o + v; return o;
}
inline float4 emuatomicAdd(float4* a, float4 v) {
  if (!emu_ok(a, 16, emu_atomics, "float4 atomic")) return v;
  ++emu_vector_atomics;
  float4 o = *a; a->x += v.x; a->y += v.y; a->z += v.z; a->w += v.w; return o;
}
inline float2 emuatomicAdd(float2* a, float2 v) {
  if (!emu_ok(a, 8, emu_atomics, "float2 atomic")) return v;
  ++emu_vector_atomics;
  float2 o = *a; a->x += v.x; a->y += v.y; return o;
}
inline float emu__uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned emu__float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline double emu__longlong_as_double(long long u) { double f; std::memcpy(&f, &u, 8); return f; }
inline long long emu__double_as_longlong(double f) { long long u; std::memcpy(&u, &f, 8); return u; }
template <typename... A> int emu_set_attr(A...) { return 0; }

// -- launch -----------------------------------------------------------------------------
template <typename K, typename P>
void emu_launch(K kernel, EmuGrid grid, int threads, size_t smem, const P& p,
                unsigned char* shared) {
  if (smem > kEmuSmemBytes) throw std::runtime_error("shared memory beyond the emulator");
  if (threads % 32 != 0 || threads > 1024) throw std::runtime_error("bad block size");
  using T = std::remove_const_t<std::remove_pointer_t<decltype(p.value)>>;
  using A = std::remove_pointer_t<decltype(p.grad_value)>;
  const int64_t N = p.groups / (int64_t(p.Lq) * p.M), LP = int64_t(p.L) * p.P;
  const int64_t nval = N * p.S * p.M * p.D;
  auto R = [](const void* b, int64_t bytes) {
    return EmuRange{static_cast<const char*>(b), static_cast<const char*>(b) + bytes};
  };
  emu_reads = {R(p.value, nval * sizeof(T)), R(p.loc, p.groups * LP * 2 * sizeof(T)),
               R(p.attn, p.groups * LP * sizeof(T)), R(p.shapes, p.L * 16),
               R(p.starts, p.L * 8)};
  if (p.grad_out) emu_reads.push_back(R(p.grad_out, p.groups * p.D * sizeof(T)));
  emu_atomics.clear();
  if (p.grad_value) emu_atomics.push_back(R(p.grad_value, nval * sizeof(A)));
  if (p.grad_loc_acc) emu_atomics.push_back(R(p.grad_loc_acc, p.groups * LP * 2 * sizeof(A)));
  if (p.grad_attn_acc) emu_atomics.push_back(R(p.grad_attn_acc, p.groups * LP * sizeof(A)));

  emu_fault.clear();
  std::vector<EmuFiber> fibers(threads);
  for (auto& f : fibers) f.stack.resize(1 << 16);
  blockDim = {static_cast<unsigned>(threads), 1, 1};
  emu_body = [&] { kernel(p); };
  std::vector<int> order(threads);
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      blockIdx = {bx, by, 0};
      std::memset(shared, 0xA5, smem);  // shared memory starts as garbage
      for (int t = 0; t < threads; ++t) {
        EmuFiber& f = fibers[t];
        f.done = false;
        f.tid = t;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, emu_entry, 0);
        order[t] = t;
      }
      for (bool running = true; running;) {  // one phase per pass
        running = false;
        std::shuffle(order.begin(), order.end(), emu_rng);
        for (int t : order) {
          EmuFiber& f = fibers[t];
          if (f.done) continue;
          emu_current = &f;
          threadIdx = {f.tid, 0, 0};
          swapcontext(&emu_scheduler, &f.ctx);
          running = true;
        }
      }
    }
  }
  if (!emu_fault.empty()) throw std::runtime_error("emulated kernel: " + emu_fault);
}
"""

EMU_MODULE = r"""
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_sm80", &emu_sm80::ms_deform_attn_cuda_forward);
  m.def("backward_sm80", &emu_sm80::ms_deform_attn_cuda_backward);
  m.def("forward_sm90", &emu_sm90::ms_deform_attn_cuda_forward);
  m.def("backward_sm90", &emu_sm90::ms_deform_attn_cuda_backward);
  m.def("stats", []() {
    return std::vector<long>{emu_checked, emu_vector_atomics, emu_barriers};
  });
  m.def("seed", [](int s) { emu_rng.seed(s); });
}
"""


def emulation_source(cu_text: str) -> str:
    """The kernel source rewritten for the host: CUDA builtins -> emulator, twice (sm_80
    scalar atomics and sm_90 vector atomics) in two namespaces."""
    includes, body = [], []
    for line in cu_text.splitlines():
        if line.startswith("#include"):
            if "c10/cuda/" not in line and "ms_deform_attn.h" not in line:
                includes.append(line)
        else:
            body.append(line)
    src = "\n".join(body)
    for name in ("__ldg", "__syncwarp", "__syncthreads", "atomicAdd", "__uint_as_float",
                 "__float_as_uint", "__longlong_as_double", "__double_as_longlong"):
        src = re.sub(r"\b" + name + r"\b", "emu" + name, src)
    edits = [
        ("extern __shared__ __align__(16) unsigned char ms_deform_smem[];",
         "alignas(16) unsigned char ms_deform_smem[kEmuSmemBytes];"),
        ("const c10::cuda::CUDAGuard guard(value.device());", ""),
        ("c10::cuda::getCurrentCUDAStream()", "nullptr"),
        ("C10_CUDA_KERNEL_LAUNCH_CHECK();", ""),
        ("C10_CUDA_CHECK(cudaFuncSetAttribute(", "(emu_set_attr("),
        ("TORCH_CHECK(value.is_cuda(),", "TORCH_CHECK(true,"),
        ("#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)", "#if EMU_SM90"),
    ]
    for old, new in edits:
        assert old in src, f"emulation: the kernel source no longer contains {old!r}"
        src = src.replace(old, new)
    src, launches = re.subn(r"kernel<<<grid, (\w+), smem, stream>>>\(p\);",
                            r"emu_launch(kernel, grid, \1, smem, p, ms_deform_smem);", src)
    assert launches == 2, "emulation: expected two kernel launches in the source"
    variants = []
    for ns, sm90 in (("emu_sm80", 0), ("emu_sm90", 1)):
        variants.append(f"#define EMU_SM90 {sm90}\nnamespace {ns} {{\n{src}\n}}  // {ns}\n"
                        "#undef EMU_SM90\n")
    return ("\n".join(includes) + "\n#include <torch/extension.h>\n" + EMU_RUNTIME +
            "\n".join(variants) + EMU_MODULE)


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    nvcc = _require_toolchain()
    if not sys.platform.startswith("linux"):
        pytest.skip("the CPU emulation of the kernel uses ucontext (Linux)")
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        pytest.skip(f"no host C++ compiler ({cxx}) for the CPU emulation")
    cuda_inc = _cuda_include_dirs(nvcc)
    if not cuda_inc:
        pytest.skip("CUDA headers (cuda_runtime.h) not found next to nvcc")
    build = tmp_path_factory.mktemp("ms_deform_attn_emu")
    cpp = build / "ms_deform_attn_emu.cpp"
    cpp.write_text(emulation_source(SOURCE.read_text()))
    ce = _cpp_extension()
    bindir = str(Path(sys.executable).parent)  # ninja from the venv
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = bindir + os.pathsep + old_path
    try:
        mod = ce.load(name="stkit_ms_deform_attn_emu", sources=[str(cpp)],
                      extra_cflags=["-O1", "-w"] + [f"-I{d}" for d in cuda_inc],
                      build_directory=str(build), verbose=False)
    except Exception as exc:  # a build failure is a finding, not a skip
        pytest.fail(f"building the CPU emulation of the kernel failed: {exc}")
    finally:
        os.environ["PATH"] = old_path
    return mod


def _case(N, Lq, M, D, shapes, P, dtype, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    shapes_t = torch.tensor(shapes, dtype=torch.long).reshape(-1, 2)
    areas = shapes_t.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S, L = int(areas.sum()), len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=torch.float64)
    loc = (torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=torch.float64) - 0.5) * spread + 0.5
    attn = torch.rand(N, Lq, M, L * P, generator=g, dtype=torch.float64).softmax(-1)
    attn = attn.reshape(N, Lq, M, L, P)
    grad = torch.randn(N, Lq, M * D, generator=g, dtype=torch.float64)
    # round through the tested dtype so that kernel and reference see the same numbers
    value, loc, attn, grad = (t.to(dtype).double() for t in (value, loc, attn, grad))
    return value, shapes_t, starts, loc, attn, grad


def _reference(value, shapes, starts, loc, attn, grad):
    """float64 autograd of the grid_sample reference; empty levels contribute zero."""
    from stkit.ops.reference import ms_deform_attn_reference

    N, _, M, D = value.shape
    Lq = loc.shape[1]
    if value.numel() == 0 or loc.numel() == 0:
        return (torch.zeros(N, Lq, M * D, dtype=value.dtype), torch.zeros_like(value),
                torch.zeros_like(loc), torch.zeros_like(attn))
    keep = (shapes.prod(1) > 0).nonzero().flatten()
    v, l, a = (t.clone().requires_grad_() for t in
               (value, loc[:, :, :, keep].contiguous(), attn[:, :, :, keep].contiguous()))
    out = ms_deform_attn_reference(v, shapes[keep], starts[keep], l, a)
    out.backward(grad)
    gl, ga = torch.zeros_like(loc), torch.zeros_like(attn)
    gl[:, :, :, keep] = l.grad
    ga[:, :, :, keep] = a.grad
    return out.detach(), v.grad, gl, ga


TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


def _assert_close(name, got, expected, dtype, scale=1.0):
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {dtype}"
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    tol = TOL[dtype]
    got = got.double()
    bad = ~torch.isclose(got, expected, rtol=tol, atol=tol * scale, equal_nan=True)
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        err = (got - expected).abs().nan_to_num(0).max().item()
        pytest.fail(f"{name}: {int(bad.sum())}/{bad.numel()} values off, e.g. at {i}: "
                    f"{got[i].item()} vs {expected[i].item()} (max error {err:.3g})")


def _run(emu, arch, value, shapes, starts, loc, attn, grad, dtype, value_offset=False):
    v, l, a, g = (t.to(dtype) for t in (value, loc, attn, grad))
    if value_offset:  # a value tensor whose data pointer is not 16-byte aligned
        buf = torch.empty(v.numel() + 1, dtype=dtype)
        buf[1:] = v.flatten()
        v = buf[1:].view(v.shape)
    out = getattr(emu, f"forward_{arch}")(v, shapes, starts, l, a)
    gv, gl, ga = getattr(emu, f"backward_{arch}")(v, shapes, starts, l, a, g)
    return out, gv, gl, ga


def _check(emu, arch, dtype, args, value_offset=False, expected=None):
    value, shapes, starts, loc, attn, grad = args
    out, gv, gl, ga = _run(emu, arch, value, shapes, starts, loc, attn, grad, dtype,
                           value_offset)
    eo, ev, el, ea = expected if expected is not None else _reference(*args)
    # location gradients scale with the level size: compare relative to their magnitude
    lscale = max(1.0, el.abs().max().item()) if el.numel() else 1.0
    _assert_close("output", out, eo, dtype)
    _assert_close("grad_value", gv, ev, dtype)
    _assert_close("grad_sampling_loc", gl, el, dtype, lscale)
    _assert_close("grad_attn_weight", ga, ea, dtype)


DTYPES = {"f64": torch.float64, "f32": torch.float32, "f16": torch.float16,
          "bf16": torch.bfloat16}
PYRAMID = [(6, 9), (3, 5), (2, 2), (1, 1)]
# (N, Lq, M, D, shapes, P, extra): D covers every vector width, partial groups
# (D/V not a power of two) and several channel slabs (D=264 float32, D=520 half).
CASES = {f"D{D}": (2, 7, 3, D, PYRAMID, 3, {}) for D in (1, 3, 4, 6, 8, 12, 32, 48, 64)}
CASES.update({
    "D264": (1, 5, 2, 264, [(3, 4), (2, 2)], 3, {}),
    "D520": (1, 3, 2, 520, [(3, 4)], 2, {}),
    "1x1-level": (1, 5, 2, 32, [(1, 1)], 1, {}),
    "outside": (2, 9, 2, 8, [(4, 7), (2, 3)], 5, {"spread": 1.6}),
    "P17": (1, 3, 1, 16, [(5, 5)], 17, {}),
    "detr-like": (2, 4, 8, 32, [(10, 17), (5, 9), (3, 5), (2, 3)], 4, {}),
    "misaligned-D16": (1, 4, 2, 16, [(3, 4), (2, 2)], 2, {"value_offset": True}),
    "misaligned-D6": (1, 4, 2, 6, [(3, 4), (2, 2)], 2, {"value_offset": True}),
    "empty-level": (1, 3, 2, 8, [(3, 4), (0, 0), (2, 2)], 2, {}),
    "P0": (1, 3, 2, 8, [(3, 4)], 0, {}),
    "N0": (0, 3, 2, 8, [(3, 4)], 2, {}),
    "D0": (1, 3, 2, 0, [(3, 4)], 2, {}),
})


@pytest.mark.parametrize("arch", ["sm80", "sm90"])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_cuda_kernel_emulated(emu, arch, dtype, case):
    N, Lq, M, D, shapes, P, extra = CASES[case]
    dt = DTYPES[dtype]
    extra = dict(extra)
    value_offset = extra.pop("value_offset", False)
    emu.seed(zlib.crc32(f"{case}/{dtype}/{arch}".encode()) % 100003)
    args = _case(N, Lq, M, D, shapes, P, dt, seed=D + P, **extra)
    _check(emu, arch, dt, args, value_offset=value_offset)


@pytest.mark.parametrize("arch", ["sm80", "sm90"])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_cuda_kernel_emulated_nonfinite_and_bad_levels(emu, arch, dtype):
    dt = DTYPES[dtype]
    value, shapes, starts, loc, attn, grad = _case(2, 6, 2, 8, [(4, 5), (2, 3)], 3, dt, seed=5)
    # NaN / inf / huge locations contribute nothing (and have zero gradients)
    bad_loc = loc.clone()
    hits = [(0, 1, 0, 0, 1, 0, math.nan), (1, 2, 1, 1, 0, 1, math.inf),
            (0, 3, 1, 0, 2, 1, -math.inf), (1, 0, 0, 1, 2, 0, 1e30)]
    far = loc.clone()
    for *i, x in hits:
        bad_loc[tuple(i)] = x
        far[tuple(i[:5])] = 5.0  # far outside: the reference samples zeros there
    _check(emu, arch, dt, (value, shapes, starts, bad_loc, attn, grad),
           expected=_reference(value, shapes, starts, far, attn, grad))
    # a level whose rows would leave the value tensor is read as empty, never out of bounds
    expected = _reference(value, shapes[:1], starts[:1], loc[:, :, :, :1].contiguous(),
                          attn[:, :, :, :1].contiguous(), grad)
    for bad_start in (21, -3, 10**12):  # S = 26, level 1 has 6 rows
        st = torch.tensor([0, bad_start])
        out, gv, gl, ga = _run(emu, arch, value, shapes, st, loc, attn, grad, dt)
        _assert_close("output", out, expected[0], dt)
        _assert_close("grad_value", gv, expected[1], dt)
        assert (gl[:, :, :, 1:] == 0).all() and (ga[:, :, :, 1:] == 0).all()
        scale = max(1.0, expected[2].abs().max().item())
        _assert_close("grad_sampling_loc", gl[:, :, :, :1].contiguous(), expected[2], dt, scale)
        _assert_close("grad_attn_weight", ga[:, :, :, :1].contiguous(), expected[3], dt)
    checked, vector_atomics, barriers = emu.stats()
    assert checked > 0 and barriers > 0
    if arch == "sm90" and dt != torch.float64:
        assert vector_atomics > 0, "the sm_90 path never used a vector atomic"
