"""Just-in-time build of the compiled deformable-attention op in ``cuda_ops/``.

``load_extension()`` compiles the C++ (and, on a machine with a GPU, CUDA) sources with
``torch.utils.cpp_extension.load`` and ninja, caches the library, and loads it into the
process, which registers the raw kernels as ``torch.ops.stkit_ext.*``. It does not
decide whether to fall back to the reference; ``stkit.ops.backend`` does that.

Cache: ``$STKIT_OPS_BUILD_DIR``, else ``$TORCH_EXTENSIONS_DIR/stkit_ops``, else
``~/.cache/stkit/ops`` (``$XDG_CACHE_HOME`` respected), with one sub-folder per hash of
the sources, flags, compiler, Python, torch and CUDA versions, so a change to any of
them rebuilds instead of loading a stale library.

CPU builds never include a CUDA header: only ``ms_deform_attn_cpu.cpp`` and
``bindings.cpp`` are compiled, without ``-DWITH_CUDA``. The CUDA kernel is added only
when torch was built with CUDA, a CUDA device is visible and nvcc is found.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

# The C++/CUDA sources live in the repository's cuda_ops/; stkit/ops/csrc is a link to that
# folder, so the same path serves a source checkout, an editable install and a wheel (where
# setuptools packages the linked files as package data).
SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
CPU_SOURCES = ("ms_deform_attn_cpu.cpp", "bindings.cpp")
CUDA_SOURCES = ("ms_deform_attn_cuda.cu",)
HEADERS = ("ms_deform_attn.h",)

# No -march=native: the library must stay valid if the cache folder is shared between
# machines; the kernel gets AVX2/AVX-512 through function multi-versioning instead.
CXX_FLAGS = ["-O3", "-DNDEBUG", "-Wno-psabi"] + ([] if sys.platform == "darwin" else ["-fopenmp"])
LD_FLAGS = [] if sys.platform == "darwin" else ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-DNDEBUG", "-DWITH_CUDA", "-lineinfo"]

_lock = threading.Lock()
_loaded_plan = None  # the BuildPlan this process loaded


class BuildError(RuntimeError):
    """The extension could not be built or loaded; the message says why."""


@dataclass
class BuildPlan:
    """What would be compiled, where, and why CUDA is (not) part of it."""

    sources: list[Path]
    with_cuda: bool
    cuda_reason: str
    cxx_flags: list[str] = field(default_factory=lambda: list(CXX_FLAGS))
    cuda_flags: list[str] = field(default_factory=list)
    ld_flags: list[str] = field(default_factory=lambda: list(LD_FLAGS))
    directory: Path | None = None
    name: str = ""


def cache_root() -> Path:
    """The folder that holds one sub-folder per build configuration."""
    if os.environ.get("STKIT_OPS_BUILD_DIR"):
        return Path(os.environ["STKIT_OPS_BUILD_DIR"]).expanduser()
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]).expanduser() / "stkit_ops"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "stkit" / "ops"


def cuda_status() -> tuple[bool, str]:
    """(build with CUDA?, reason) following the rule in the module docstring."""
    if torch.version.cuda is None:
        return False, "torch has no CUDA support"
    if not torch.cuda.is_available():
        return False, "no CUDA device available"
    CUDA_HOME = _cpp_extension().CUDA_HOME
    if CUDA_HOME is None or not (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return False, "nvcc not found (set CUDA_HOME)"
    missing = [s for s in CUDA_SOURCES if not (SOURCE_DIR / s).exists()]
    if missing:
        return False, f"CUDA sources missing: {', '.join(missing)}"
    return True, f"CUDA {torch.version.cuda}, nvcc in {CUDA_HOME}"


def _cpp_extension():
    """Import torch.utils.cpp_extension without its 'No CUDA runtime' log line on CPU."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        log.setLevel(level)
    return cpp_extension


def _compiler() -> str:
    return os.environ.get("CXX", "c++")


def _cuda_arch_tag() -> str:
    """GPU architectures the CUDA build targets (part of the cache key)."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return ";".join(f"{a}.{b}" for a, b in sorted(caps))


def plan(with_cuda: bool | None = None) -> BuildPlan:
    """Resolve sources, flags and the cache folder (no compiling)."""
    auto_cuda, reason = cuda_status()
    if with_cuda is None:
        with_cuda = auto_cuda
    elif with_cuda and not auto_cuda:
        raise BuildError(f"CUDA build requested but not possible: {reason}")
    names = list(CPU_SOURCES) + (list(CUDA_SOURCES) if with_cuda else [])
    p = BuildPlan(sources=[SOURCE_DIR / n for n in names], with_cuda=with_cuda,
                  cuda_reason=reason)
    if with_cuda:
        p.cxx_flags.append("-DWITH_CUDA")
        p.cuda_flags = list(NVCC_FLAGS)
    missing = [str(s) for s in p.sources if not s.exists()]
    if missing:
        raise BuildError(f"source files not found: {', '.join(missing)}")
    h = hashlib.sha256()
    for path in p.sources + [SOURCE_DIR / n for n in HEADERS]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    key_parts = [torch.__version__, str(torch.version.cuda), sys.version, platform.machine(),
                 _compiler(), repr(p.cxx_flags), repr(p.cuda_flags), repr(p.ld_flags)]
    if with_cuda:
        key_parts.append(_cuda_arch_tag())
    h.update("\0".join(key_parts).encode())
    digest = h.hexdigest()[:16]
    p.directory = cache_root() / f"{'cuda' if with_cuda else 'cpu'}-{digest}"
    p.name = f"stkit_ext_{digest[:8]}"
    return p


@contextlib.contextmanager
def _ninja_on_path():
    """torch finds ninja through PATH; a venv used without activation may lack it."""
    old = os.environ.get("PATH", "")
    extra = [str(Path(sys.executable).parent)]
    try:
        import ninja  # the pip package ships the binary

        extra.insert(0, ninja.BIN_DIR)
    except (ImportError, AttributeError):
        pass
    os.environ["PATH"] = os.pathsep.join(extra + [old])
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _loaded() -> bool:
    try:
        torch.ops.stkit_ext.ms_deform_attn_forward  # noqa: B018 (attribute lookup = probe)
        return True
    except (AttributeError, RuntimeError):
        return False


def _first_error(text: str) -> str:
    """The compiler's first 'error' line (the useful one), else the last line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower() and not ln.startswith("ninja:"):
            return ln[:300]
    return lines[-1][:300] if lines else ""


def _build_and_load(p: BuildPlan, verbose: bool) -> None:
    if shutil.which(_compiler()) is None:
        raise BuildError(f"C++ compiler '{_compiler()}' not found (set CXX)")
    cpp_extension = _cpp_extension()
    p.directory.mkdir(parents=True, exist_ok=True)
    try:
        with _ninja_on_path():
            cpp_extension.load(  # (it appends to the flag lists: pass copies)
                name=p.name, sources=[str(s) for s in p.sources],
                extra_cflags=list(p.cxx_flags), extra_cuda_cflags=list(p.cuda_flags),
                extra_ldflags=list(p.ld_flags), extra_include_paths=[str(SOURCE_DIR)],
                build_directory=str(p.directory), with_cuda=p.with_cuda,
                is_python_module=False, verbose=verbose)
    except Exception as exc:  # compiler errors arrive as RuntimeError/CalledProcessError
        detail = _first_error(str(exc)) or type(exc).__name__
        raise BuildError(f"build failed in {p.directory}: {detail}") from exc
    if not _loaded():
        raise BuildError(f"library built in {p.directory} did not register stkit_ext ops")


def load_extension(with_cuda: bool | None = None, verbose: bool = False) -> BuildPlan:
    """Build (or reuse from the cache) and load the extension; raises BuildError.

    With ``with_cuda=None`` a failed CUDA build falls back to a CPU-only build (with a
    warning), so the CPU kernel survives a broken CUDA toolkit. Safe to call repeatedly
    and from several threads; a second process building the same configuration waits on
    torch's file lock and then reuses the result.
    """
    global _loaded_plan
    with _lock:
        if _loaded_plan is not None:
            return _loaded_plan
        p = plan(with_cuda)
        try:
            _build_and_load(p, verbose)
        except BuildError as exc:
            if not (p.with_cuda and with_cuda is None):
                raise
            warnings.warn(f"stkit.ops: CUDA kernel unavailable ({exc}); building the CPU "
                          "kernel only", RuntimeWarning, stacklevel=2)
            p = plan(with_cuda=False)
            p.cuda_reason = f"CUDA build failed: {exc}"
            _build_and_load(p, verbose)
        _loaded_plan = p
        return p
