"""Multi-scale deformable attention (MSDeformAttn), compiled or in plain PyTorch.

    out = ms_deform_attn(value, spatial_shapes, level_start_index,
                         sampling_locations, attention_weights)   # (N, Lq, M*D)

For each query, head and level, P points are sampled bilinearly from the value map at
``sampling_locations`` (normalised (x, y), pixel = loc * size - 0.5, zero outside) and
summed with ``attention_weights``. Shapes are documented on
:func:`ms_deform_attn_reference`, the pure-PyTorch ground truth.

Implementation choice (see :func:`backend`): the C++/CUDA extension in ``cuda_ops/`` is
built just in time on first use (cached; ``python -m stkit ops build`` builds ahead of
time). Without it, the reference runs, after a one-time warning naming the reason.
``STKIT_OPS_BACKEND=reference`` forces the reference; ``=compiled`` makes a failed build
an error instead of a fallback.
"""

from .dispatch import ENV_VAR, backend
from .module import MSDeformAttn, level_start_index
from .op import ms_deform_attn, reference_only
from .reference import ms_deform_attn_reference

__all__ = ["ms_deform_attn", "reference_only", "ms_deform_attn_reference", "backend", "ENV_VAR",
           "MSDeformAttn", "level_start_index"]
