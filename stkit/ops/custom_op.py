"""``stkit::ms_deform_attn`` as a torch.library custom op (autograd, fake tensors, compile).

Two ops wrap the raw kernels of the extension (``torch.ops.stkit_ext.*``):
    torch.ops.stkit.ms_deform_attn(value, spatial_shapes, level_start_index,
                                   sampling_locations, attention_weights) -> (N, Lq, M*D)
    torch.ops.stkit.ms_deform_attn_backward(..., grad_output) -> (grad_value,
                                   grad_sampling_locations, grad_attention_weights)
``register_fake`` gives their output shapes to FakeTensor tracing, and
``register_autograd`` connects the two, so ``torch.compile`` keeps the op in one graph.
The backward op is not itself differentiable (no double backward through the kernel).

These ops never choose an implementation: ``stkit.ops.ms_deform_attn`` calls them only
when ``dispatch.uses_compiled`` says a kernel exists for the device, and falls back to the
reference itself otherwise. Called directly without a kernel, they raise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .checks import check_levels
from .dispatch import backend, uses_compiled

__all__ = ["ms_deform_attn_op", "ms_deform_attn_backward_op"]


def _require_kernel(device: torch.device) -> None:
    if not uses_compiled(device.type):
        raise RuntimeError(f"stkit::ms_deform_attn has no compiled kernel for {device.type} tensors "
                           f"({backend(device)}); call stkit.ops.ms_deform_attn, which falls back to the reference")


def _index_on(t: Tensor, device: torch.device) -> Tensor:
    """Index tables live on the CPU or on value's device; kernels get value's device."""
    return t if t.device == device else t.to(device, non_blocking=True)


@torch.library.custom_op("stkit::ms_deform_attn", mutates_args=())
def ms_deform_attn_op(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                      sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    check_levels(value, spatial_shapes, level_start_index)
    _require_kernel(value.device)
    dev = value.device
    return torch.ops.stkit_ext.ms_deform_attn_forward(
        value, _index_on(spatial_shapes, dev).long(), _index_on(level_start_index, dev).long(),
        sampling_locations, attention_weights)


@ms_deform_attn_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    N, _, M, D = value.shape
    return value.new_empty((N, sampling_locations.shape[1], M * D))


@torch.library.custom_op("stkit::ms_deform_attn_backward", mutates_args=())
def ms_deform_attn_backward_op(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                               sampling_locations: Tensor, attention_weights: Tensor,
                               grad_output: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    _require_kernel(value.device)
    dev = value.device
    gv, gl, ga = torch.ops.stkit_ext.ms_deform_attn_backward(
        value, _index_on(spatial_shapes, dev).long(), _index_on(level_start_index, dev).long(),
        sampling_locations, attention_weights, grad_output)
    return gv, gl, ga


@ms_deform_attn_backward_op.register_fake
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
      grad_output):
    return (torch.empty_like(value), torch.empty_like(sampling_locations),
            torch.empty_like(attention_weights))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, loc, attn = ctx.saved_tensors
    gv, gl, ga = ms_deform_attn_backward_op(value, spatial_shapes, level_start_index, loc, attn,
                                            grad_output.contiguous())
    return gv, None, None, gl, ga


ms_deform_attn_op.register_autograd(_backward, setup_context=_setup_context)
