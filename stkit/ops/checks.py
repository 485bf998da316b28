"""Input validation for ``stkit.ops.ms_deform_attn``: clear errors that name the tensor.

Two levels, both cheap:
- ``check_static``: ranks, sizes, dtypes and devices. It reads only metadata, so it runs
  on every call and inside ``torch.compile`` traces (where it becomes guards).
- ``check_levels``: the values of the small index tensors (S == sum H*W, level starts
  consistent). Reading them from a GPU needs a device-to-host copy, so results are
  cached per (tensor storage, version); the usual pattern of passing the same
  ``spatial_shapes`` tensor to every layer costs one check.
"""

from __future__ import annotations

import torch

__all__ = ["check_static", "check_levels"]

_NAME = "ms_deform_attn"
_level_cache: dict[tuple, None] = {}
_LEVEL_CACHE_SIZE = 64


def _fail(msg: str) -> None:
    raise ValueError(f"{_NAME}: {msg}")


def _is_int(t: torch.Tensor) -> bool:
    return not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != torch.bool


def check_static(value, spatial_shapes, level_start_index, sampling_locations,
                 attention_weights) -> None:
    """Shape/dtype/device checks; raises ValueError (TypeError for non-tensors)."""
    named = {"value": value, "spatial_shapes": spatial_shapes,
             "level_start_index": level_start_index,
             "sampling_locations": sampling_locations, "attention_weights": attention_weights}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{_NAME}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if value.dim() != 4:
        _fail(f"value must be (N, S, M, D), got shape {tuple(value.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        _fail("sampling_locations must be (N, Lq, M, L, P, 2), got shape "
              f"{tuple(sampling_locations.shape)}")
    if attention_weights.dim() != 5:
        _fail("attention_weights must be (N, Lq, M, L, P), got shape "
              f"{tuple(attention_weights.shape)}")
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        _fail(f"spatial_shapes must be (L, 2) rows (H, W), got shape {tuple(spatial_shapes.shape)}")
    if level_start_index.dim() != 1:
        _fail(f"level_start_index must be (L,), got shape {tuple(level_start_index.shape)}")

    for name in ("value", "sampling_locations", "attention_weights"):
        if not named[name].dtype.is_floating_point:
            _fail(f"{name} must be a floating-point tensor, got {named[name].dtype}")
    for name in ("spatial_shapes", "level_start_index"):
        if not _is_int(named[name]):
            _fail(f"{name} must be an integer tensor (int64), got {named[name].dtype}")
    if not (value.dtype == sampling_locations.dtype == attention_weights.dtype):
        _fail("value, sampling_locations and attention_weights must share a dtype, got "
              f"{value.dtype}, {sampling_locations.dtype}, {attention_weights.dtype} "
              "(under autocast, cast them explicitly, e.g. loc.to(value.dtype))")

    N, _, M, _ = value.shape
    L = sampling_locations.shape[3]
    if sampling_locations.shape[0] != N or sampling_locations.shape[2] != M:
        _fail(f"sampling_locations {tuple(sampling_locations.shape)} does not match value "
              f"(N, S, M, D) = {tuple(value.shape)} in N or M")
    if tuple(attention_weights.shape) != tuple(sampling_locations.shape[:5]):
        _fail(f"attention_weights {tuple(attention_weights.shape)} must equal "
              f"sampling_locations' (N, Lq, M, L, P) = {tuple(sampling_locations.shape[:5])}")
    if spatial_shapes.shape[0] != L or level_start_index.shape[0] != L:
        _fail(f"levels disagree: sampling_locations has L={L}, spatial_shapes has "
              f"{spatial_shapes.shape[0]}, level_start_index has {level_start_index.shape[0]}")

    dev = value.device
    for name in ("sampling_locations", "attention_weights"):
        if named[name].device != dev:
            _fail(f"{name} is on {named[name].device} but value is on {dev}")
    for name in ("spatial_shapes", "level_start_index"):
        d = named[name].device
        if d != dev and d.type != "cpu":
            _fail(f"{name} is on {d}; it must be on value's device ({dev}) or on the CPU")


def check_levels(value: torch.Tensor, spatial_shapes: torch.Tensor,
                 level_start_index: torch.Tensor) -> None:
    """Value checks of the level tables (cached, see module docstring)."""
    key = (spatial_shapes.device, spatial_shapes.data_ptr(), spatial_shapes._version,
           level_start_index.data_ptr(), level_start_index._version,
           tuple(spatial_shapes.shape), value.shape[1])
    if key in _level_cache:
        return
    shapes = spatial_shapes.detach().cpu().tolist()
    starts = level_start_index.detach().cpu().tolist()
    total = 0
    for lvl, ((h, w), start) in enumerate(zip(shapes, starts)):
        if h < 1 or w < 1:
            _fail(f"spatial_shapes[{lvl}] = ({h}, {w}); heights and widths must be >= 1")
        if start != total:
            _fail(f"level_start_index[{lvl}] = {start}, but the levels before it hold {total} "
                  "rows (it must be the running sum of H*W)")
        total += h * w
    if total != value.shape[1]:
        _fail(f"value has S={value.shape[1]} rows but spatial_shapes sum to {total} (sum of H*W)")
    if len(_level_cache) >= _LEVEL_CACHE_SIZE:
        _level_cache.clear()
    _level_cache[key] = None
