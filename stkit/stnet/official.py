"""The released STNet clip model's weights in the kit's network, and back; and their evaluation.

    model = build_model(replace(variant_config(recipe("paper").model, "faithful"), pretrained=False))
    load_official_state_dict(model, "checkpoint0027.pth")   # or a state dict, or {"model": ...}
    metrics = evaluate_official(buv_root, "checkpoint0027.pth", "paper", "runs/official")

The release's clip model (models/clip_output/triple_branch_baseline with the flags of
configs/test.sh: ``--with_box_refine``, ``--enc_connect_all_frames``, 4 levels) names its
parts ``backbone.0.body`` (the torchvision ResNet: conv1, bn1, layer1-4 with frozen batch
norm), ``input_proj`` (the 4 projections), ``transformer`` (level_embed,
reference_points, encoder.layers, decoder.layers), ``query_embed``, and per decoder layer
``class_embed.i`` and ``bbox_embed.i``. ``transformer.decoder.bbox_embed.i`` is the same
module as ``bbox_embed.i`` (box refinement hands the heads to the decoder), so its
tensors are in the file twice; both copies must be there and equal. Inside the layers the
names differ (:data:`ENCODER_PARTS`, :data:`DECODER_PARTS`); everything else is a prefix.

The release has 3 class logits, channel 0 a background that no box has (BUV's category
ids are 1 and 2); the kit's 2 logits are its channels 1 and 2, so channel 0 is dropped.
That changes one thing: the released post-processing takes its top-100 (query, class)
pairs over all 3 channels, so a channel-0 score could take a slot there; the kit ranks
only the two real classes (its loss, likewise, has no channel-0 term).

With the ``faithful`` variant (and the release's sizes) the kit then computes what the
released network computes on clips without padding. This module maps names and checks
sizes; it defines no network and trains nothing.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import replace
from pathlib import Path

import torch

from .model import STNet, build_model

__all__ = ["OFFICIAL_PREFIXES", "ENCODER_PARTS", "DECODER_PARTS", "official_key", "kit_key_to_official",
           "read_official", "official_state", "official_sizes", "check_official_model",
           "load_official_state_dict", "to_official_state_dict", "evaluate_official"]

# official prefix -> the kit's, first match wins
OFFICIAL_PREFIXES = {
    "backbone.0.body.conv1.": "pyramid.body.stem.0.",
    "backbone.0.body.bn1.": "pyramid.body.stem.1.",
    "backbone.0.body.": "pyramid.body.",
    "input_proj.": "pyramid.proj.",
    "transformer.level_embed": "level_embed",
    "transformer.reference_points.": "reference_points.",
    "transformer.encoder.layers.": "encoder.",
    "transformer.decoder.layers.": "decoder.layers.",
    "query_embed.": "query_embed.",
    "class_embed.": "decoder.class_heads.",
    "bbox_embed.": "decoder.box_heads.",
}
# inside one encoder / decoder layer (after its index), first match wins
ENCODER_PARTS = {
    "self_attn.temporal_sampling_offsets.": "attn.temporal_offsets.",
    "self_attn.temporal_attention_weights.": "attn.temporal_weights.",
    "self_attn.": "attn.", "norm1.": "norm.", "linear1.": "ffn.lin1.", "linear2.": "ffn.lin2.",
    "norm2.": "ffn.norm.",
}
DECODER_PARTS = {  # the release: self-attention -> norm2, cross-attention -> norm1, FFN -> norm3
    "cross_attn.temporal_sampling_offsets.": "cross.temporal_offsets.",
    "cross_attn.temporal_attention_weights.": "cross.temporal_weights.",
    "cross_attn.": "cross.", "self_attn.": "self_attn.", "norm2.": "norm1.", "norm1.": "norm2.",
    "linear1.": "ffn.lin1.", "linear2.": "ffn.lin2.", "norm3.": "ffn.norm.",
}
_LAYER_PARTS = {"transformer.encoder.layers.": ENCODER_PARTS, "transformer.decoder.layers.": DECODER_PARTS}
ALIAS = ("transformer.decoder.bbox_embed.", "bbox_embed.")  # the same module under two names
CLASS_PREFIX = "class_embed."
BACKGROUND_LOGIT = -100.0  # what to_official_state_dict writes for channel 0 (never ranked, ~no loss)
RESNETS = {(False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50",
           (True, (3, 4, 23, 3)): "resnet101", (True, (3, 8, 36, 3)): "resnet152"}


def _rename(name: str, prefixes: dict, parts: dict) -> str | None:
    for theirs, ours in prefixes.items():
        if name.startswith(theirs):
            rest = name[len(theirs):]
            if theirs not in parts:
                return ours + rest
            index, _, sub = rest.partition(".")
            part = next((p for p in parts[theirs] if sub.startswith(p)), None)
            if part is None or not index.isdigit():
                return None
            return f"{ours}{index}.{parts[theirs][part]}{sub[len(part):]}"
    return None


def official_key(name: str) -> str:
    """An official parameter name -> the kit's
    (``transformer.decoder.layers.0.norm3.weight`` -> ``decoder.layers.0.ffn.norm.weight``)."""
    name = name.removeprefix("module.")  # saved from nn.DataParallel / DDP
    if name.startswith(ALIAS[0]):
        name = ALIAS[1] + name[len(ALIAS[0]):]
    ours = _rename(name, OFFICIAL_PREFIXES, _LAYER_PARTS)
    if ours is None:
        raise KeyError(f"{name!r} is not a parameter of the released STNet clip model's layout")
    return ours


def kit_key_to_official(name: str) -> str:
    """The inverse of :func:`official_key` (the ``bbox_embed.`` name of an aliased head)."""
    prefixes = {ours: theirs for theirs, ours in OFFICIAL_PREFIXES.items()}
    parts = {OFFICIAL_PREFIXES[t]: {o: p for p, o in ps.items()} for t, ps in _LAYER_PARTS.items()}
    theirs = _rename(name, prefixes, parts)
    if theirs is None:
        raise KeyError(f"{name!r} has no place in the released STNet layout")
    return theirs


def _official_or_none(name: str) -> str | None:
    try:
        return kit_key_to_official(name)
    except KeyError:
        return None


def read_official(path) -> dict:
    """A released checkpoint file -> its model state dict (``torch.load(weights_only=True)``)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds more than tensors (the released training saves its argparse args, optimizer and "
            "epoch next to the weights), which torch.load(..., weights_only=True) refuses to read. Re-save "
            "the 'model' entry alone, once, from a file you trust:\n  python -c \"import torch; ck = "
            f"torch.load({str(path)!r}, map_location='cpu', weights_only=False); torch.save(ck['model'], "
            f"{str(Path(path).with_suffix('')) + '_model.pth'!r})\"\nthen give that file.") from err
    return official_state(obj, str(path))


def official_state(obj, where: str = "the weights") -> dict:
    """The state dict in a released checkpoint dict (``{"model": ...}``) or a bare one, without
    a ``module.`` prefix."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"{where}: expected a state dict of tensors or a checkpoint with a 'model' entry")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _count(state: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def official_sizes(state: dict) -> dict:
    """The sizes an official state dict shows (those the tensors pin down unambiguously), in the
    kit's terms (``num_classes``: the release's logits less its background channel)."""
    def shape(key, dim):
        return tuple(state[key].shape)[dim] if key in state and state[key].dim() > dim else None
    body = "backbone.0.body."
    blocks = tuple(_count(state, f"{body}layer{i}.") for i in range(1, 5))
    bottleneck = any(k.startswith(body) and ".conv3." in k for k in state)
    classes = shape(f"{CLASS_PREFIX}0.weight", 0)
    return {"backbone": RESNETS.get((bottleneck, blocks), f"a ResNet with {blocks} blocks"),
            "n_levels": shape("transformer.level_embed", 0), "d_model": shape("transformer.level_embed", 1),
            "num_queries": shape("query_embed.weight", 0),
            "enc_layers": _count(state, "transformer.encoder.layers."),
            "dec_layers": _count(state, "transformer.decoder.layers."),
            "ffn_dim": shape("transformer.encoder.layers.0.linear1.weight", 0),
            "num_classes": None if classes is None else classes - 1}


def check_official_model(cfg) -> None:
    """The kit model must be the released network: the faithful variant (whose decoder
    self-attention has 8 heads whatever ``n_heads`` says, as the release's), temporal, one
    query group and a width its GroupNorm(32, d) takes."""
    bad = []
    if not cfg.faithful or cfg.baseline:
        bad.append("the 'faithful' variant (variant_config(cfg, 'faithful'))")
    if cfg.query_groups != 1:
        bad.append(f"one query set per decoded frame (objective {cfg.objective!r} splits them)")
    if cfg.d_model % 32:
        bad.append(f"d_model a multiple of 32 (the release's GroupNorm(32, d); got {cfg.d_model})")
    if not cfg.temporal:
        bad.append("a clip of more than one frame (the release's temporal heads)")
    if bad:
        raise ValueError("official STNet weights need the released network (the published ones: the paper "
                         "recipe's, --size paper); the model needs: " + "; ".join(bad))


def _check_sizes(cfg, state: dict) -> None:
    theirs = official_sizes(state)
    ours = {k: getattr(cfg, k) for k in theirs}
    diff = [f"{k}: weights {theirs[k]}, model {ours[k]}" for k in theirs
            if theirs[k] is not None and theirs[k] != ours[k]]
    if diff:
        raise ValueError("the official weights are of another size than the model (build it from a recipe of "
                         "these sizes; the published weights are the paper recipe's, --size paper): " + "; ".join(diff))


def _drop_aliases(state: dict) -> dict:
    """Check that every box head is in the file under both names, equal; keep one."""
    alias, base = ALIAS
    heads = {k for k in state if k.startswith(base)}
    copies = {base + k[len(alias):] for k in state if k.startswith(alias)}
    if heads != copies:
        missing = sorted([alias + k[len(base):] for k in heads - copies] + sorted(copies - heads))
        raise ValueError(f"official weights: missing keys (box refinement stores every box head twice): {missing}")
    unequal = [k for k in sorted(heads) if state[k].shape != state[alias + k[len(base):]].shape
               or not torch.equal(state[k], state[alias + k[len(base):]])]
    if unequal:
        raise ValueError(f"official weights: {unequal} differ from their aliases {alias}... (the same module)")
    return {k: v for k, v in state.items() if not k.startswith(alias)}


def _map_official(state: dict, ours: dict) -> dict:
    """Official names -> the kit's, channel 0 of the class heads dropped; strict on names and shapes."""
    unknown, mapped = [], {}
    for k, v in state.items():
        try:
            mapped[official_key(k)] = (k, v)
        except KeyError:
            unknown.append(k)
    unknown += [k for kit, (k, _) in mapped.items() if kit not in ours]
    if unknown:
        raise ValueError("official weights: unknown keys (not in the released clip model or the kit's): "
                         f"{sorted(unknown)}")
    missing = [f"{_official_or_none(k)} (the kit's {k})" for k in ours if k not in mapped]
    if missing:
        raise ValueError(f"official weights: missing keys: {missing}")
    out, bad = {}, []
    for kit, (k, v) in mapped.items():
        if k.startswith(CLASS_PREFIX) and v.shape[:1] == (ours[kit].shape[0] + 1,):
            v = v[1:]  # channel 0: the background no box has
        if v.shape != ours[kit].shape:
            bad.append(f"{k}: {tuple(v.shape)} (official) vs {kit}: {tuple(ours[kit].shape)} (kit)")
        out[kit] = v
    if bad:
        raise ValueError(f"official weights: tensors of the wrong shape: {bad}")
    return out


def load_official_state_dict(model: STNet, state) -> None:
    """Load the released STNet clip model's weights into a kit :class:`STNet`, strictly.

    ``state``: a file (read with :func:`read_official`), a released checkpoint dict
    (``{"model": ...}``) or its state dict. The model must be the released network
    (:func:`check_official_model`) of the weights' sizes. An unknown or missing key, a tensor
    of the wrong shape, or box-head aliases that differ are errors naming them. The class
    heads' channel 0 (the release's unused background) is dropped (module docstring).
    """
    state = read_official(state) if isinstance(state, (str, os.PathLike)) else official_state(state)
    check_official_model(model.config)
    _check_sizes(model.config, state)
    mapped = _map_official(_drop_aliases(state), model.state_dict())
    model.load_state_dict(mapped, strict=True)


def to_official_state_dict(model: STNet) -> dict:
    """The inverse of :func:`load_official_state_dict`: the kit's weights in the release's
    layout, box heads under both names and a class channel 0 (zero weights, bias
    :data:`BACKGROUND_LOGIT`: the released post-processing never ranks it)."""
    check_official_model(model.config)
    out = {}
    for k, v in model.state_dict().items():
        theirs = kit_key_to_official(k)
        if theirs.startswith(CLASS_PREFIX):
            row = torch.full_like(v[:1], BACKGROUND_LOGIT) if v.dim() == 1 else torch.zeros_like(v[:1])
            v = torch.cat([row, v])
        out[theirs] = v
        if theirs.startswith(ALIAS[1]):
            out[ALIAS[0] + theirs[len(ALIAS[1]):]] = v.clone()
    return out


def evaluate_official(root, weights, size="quick", out=None, device="cpu", progress: bool = True) -> dict:
    """Released weights on a BUV folder's val split: the faithful model of the recipe ``size``
    (a run size or a recipe file; the published weights are the paper recipe's network), its
    clips read as that variant reads them, ``evaluate_model``'s metrics; written to
    ``out/official_eval.json`` when ``out`` is given."""
    from ..engine.checkpoint import write_json
    from . import experiment
    from .evaluate import evaluate_model

    r = experiment.variant_recipe(experiment.recipe(size), "faithful")
    model = build_model(replace(r.model, pretrained=False))  # every weight comes from the file
    load_official_state_dict(model, weights)
    model.to(device).eval()
    metrics = evaluate_model(model, experiment.load_splits(root, r.data)["val"], progress=progress)
    if out is not None:
        record = {"weights": str(weights), "recipe": str(r.path), "model_config": r.model.to_dict()}
        write_json(Path(out) / "official_eval.json", {**record, "metrics": metrics})
    return metrics
