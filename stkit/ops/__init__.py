"""Multi-scale deformable attention (MSDeformAttn), compiled or in plain PyTorch.

    out = ms_deform_attn(value, spatial_shapes, level_start_index,
                         sampling_locations, attention_weights)   # (N, Lq, M*D)

For each query, head and level, P points are sampled bilinearly from the value map at
``sampling_locations`` (normalised (x, y), pixel = loc * size - 0.5, zero outside) and
summed with ``attention_weights``. Shapes are documented on
:func:`ms_deform_attn_reference`, the pure-PyTorch ground truth.

Implementation choice (see :func:`backend`): the C++/CUDA extension in ``cuda_ops/`` is
built just in time on first use (cached; ``python -m stkit.ops build`` builds ahead of
time). Without it, the reference runs, after a one-time warning naming the reason.
``STKIT_OPS_BACKEND=reference`` forces the reference; ``=compiled`` makes a failed build
an error instead of a fallback.
"""

from __future__ import annotations

import torch

from .checks import check_levels, check_static
from .custom_op import ms_deform_attn_op
from .dispatch import ENV_VAR, backend, uses_compiled
from .reference import ms_deform_attn_reference
from .module import MSDeformAttn, level_start_index

__all__ = ["ms_deform_attn", "ms_deform_attn_reference", "backend", "ENV_VAR",
           "MSDeformAttn", "level_start_index"]


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
    if uses_compiled(value.device.type):
        # The custom op checks the level tables itself (also inside compiled graphs).
        return ms_deform_attn_op(value, spatial_shapes, level_start_index, sampling_locations,
                                 attention_weights)
    if not torch.compiler.is_compiling():
        check_levels(value, spatial_shapes, level_start_index)
    return ms_deform_attn_reference(value, spatial_shapes, level_start_index,
                                    sampling_locations, attention_weights)
