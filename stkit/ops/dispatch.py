"""Which implementation ``stkit.ops.ms_deform_attn`` uses, decided once per process.

``STKIT_OPS_BACKEND`` (read on first use):
- ``auto`` (default): build/load the compiled op lazily; if that fails, warn once with
  the reason and use the PyTorch reference.
- ``reference``: never build; always use the reference.
- ``compiled``: build/load, and raise instead of falling back (CI, benchmarks).
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass

import torch

from . import build as _build

__all__ = ["backend", "mode", "resolve", "uses_compiled", "ENV_VAR"]

ENV_VAR = "STKIT_OPS_BACKEND"
_CHOICES = ("auto", "reference", "compiled")


@dataclass(frozen=True)
class State:
    compiled: bool   # the extension is loaded (CPU kernel registered)
    cuda: bool       # ... and it has the CUDA kernel
    reason: str      # why not compiled / why no CUDA


_state: State | None = None
_lock = threading.Lock()


def mode() -> str:
    """``STKIT_OPS_BACKEND`` as one of auto, reference, compiled (an error for anything else)."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(f"{ENV_VAR}={value!r}; expected one of {', '.join(_CHOICES)}")
    return value


def resolve() -> State:
    """Decide (building if needed) and cache the backend state."""
    global _state
    if _state is not None:
        return _state
    with _lock:
        if _state is not None:
            return _state
        chosen = mode()
        if chosen == "reference":
            _state = State(False, False, f"forced by {ENV_VAR}=reference")
            return _state
        try:
            plan = _build.load_extension()
        except _build.BuildError as exc:
            if chosen == "compiled":
                raise
            _state = State(False, False, f"build failed: {exc}")
            warnings.warn(f"stkit.ops: compiled deformable attention unavailable ({exc}); "
                          "using the PyTorch reference (slower)", RuntimeWarning, stacklevel=3)
            return _state
        has_cuda = bool(torch.ops.stkit_ext.has_cuda())
        _state = State(True, has_cuda, "" if has_cuda else plan.cuda_reason)
        return _state


@torch.compiler.assume_constant_result
def uses_compiled(device_type: str) -> bool:
    """True when tensors on ``device_type`` go to a compiled kernel.

    Evaluated once at trace time under torch.compile (a constant in the graph), so the
    lazy build never runs inside a trace.
    """
    s = resolve()
    if device_type == "cpu":
        return s.compiled
    if device_type == "cuda":
        return s.cuda
    return False


def backend(device: str | torch.device | None = None) -> str:
    """Name of the implementation in use, e.g. ``"compiled-cpu"``.

    Without ``device``: ``"compiled-cuda"`` (CPU and CUDA kernels), ``"compiled-cpu"``, or
    ``"reference (<reason>)"``. With a device: what tensors on that device use, e.g.
    ``backend("cuda")`` -> ``"reference (extension built without CUDA: ...)"``.
    """
    s = resolve()
    if device is None:
        if not s.compiled:
            return f"reference ({s.reason})"
        return "compiled-cuda" if s.cuda else "compiled-cpu"
    dtype = torch.device(device).type
    if dtype == "cpu":
        return "compiled-cpu" if s.compiled else f"reference ({s.reason})"
    if dtype == "cuda":
        if s.cuda:
            return "compiled-cuda"
        why = s.reason if not s.compiled else f"extension built without CUDA: {s.reason}"
        return f"reference ({why})"
    return f"reference (no kernel for device type {dtype!r})"
