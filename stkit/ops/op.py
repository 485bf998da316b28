"""The op as every caller uses it: the compiled kernel when there is one, else the reference.

    out = ms_deform_attn(value, spatial_shapes, level_start_index,
                         sampling_locations, attention_weights)   # (N, Lq, M*D)
    with reference_only():                                         # e.g. a benchmark's baseline
        out = ms_deform_attn(...)

The choice itself (build, fallback, ``STKIT_OPS_BACKEND``) is ``stkit.ops.dispatch``'s; the
kernels' torch.library ops are ``stkit.ops.custom_op``'s.
"""

from __future__ import annotations

import contextlib

import torch

from .checks import check_levels, check_static
from .custom_op import ms_deform_attn_op
from .dispatch import uses_compiled
from .reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn", "reference_only"]

_REFERENCE_ONLY = False  # set by reference_only(): every call runs the reference


@contextlib.contextmanager
def reference_only():
    """Within the block, :func:`ms_deform_attn` runs the PyTorch reference on every device
    (what a benchmark compares the compiled kernel against); not thread-safe, not for training."""
    global _REFERENCE_ONLY
    saved, _REFERENCE_ONLY = _REFERENCE_ONLY, True
    try:
        yield
    finally:
        _REFERENCE_ONLY = saved


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor,
                   level_start_index: torch.Tensor, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor) -> torch.Tensor:
    """Deformable attention with autograd; compiled kernel when available, else reference.

    Args:
        value: (N, S, M, D) float tensor (float32/64, float16, bfloat16).
        spatial_shapes: (L, 2) int64 rows (H_l, W_l), with S = sum H_l * W_l.
        level_start_index: (L,) int64 running sum of H_l * W_l (starting at 0).
        sampling_locations: (N, Lq, M, L, P, 2) normalised (x, y); outside [0, 1] samples 0.
        attention_weights: (N, Lq, M, L, P), normally softmaxed over L*P.

    Returns:
        (N, Lq, M*D) tensor in value's dtype.

    First-order gradients flow to value, sampling_locations and attention_weights; the
    compiled backward is not itself differentiable (use the reference for double
    backward). Locations with a NaN/inf coordinate count as outside the map.
    """
    check_static(value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights)
    if not _REFERENCE_ONLY and uses_compiled(value.device.type):
        # The custom op checks the level tables itself (also inside compiled graphs).
        return ms_deform_attn_op(value, spatial_shapes, level_start_index, sampling_locations,
                                 attention_weights)
    if not torch.compiler.is_compiling():
        check_levels(value, spatial_shapes, level_start_index)
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index,
                                    sampling_locations, attention_weights)
