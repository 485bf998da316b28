"""The official STERN code's weights in the kit's network, and back.

    model = build_model(variant_config(recipe("paper").model, "faithful"))
    load_official_state_dict(model, torch.load("official.pth", weights_only=True))

The official models.py names its parts ``clmodel`` (torchvision VGG16, last layer
Linear(4096, 1)), ``localization`` (the conv stack, same indices as
``LocalisationNet.features``) and ``fc_loc`` (the regressor, same indices as
``LocalisationNet.regressor``). Its flatten of the 128x12x12 map is the kit's
AdaptiveAvgPool2d(12) (the identity at 256 px) followed by flatten. With the ``faithful``
variant the kit's outputs then equal the official model's. This module maps names; it
defines no network.
"""

from __future__ import annotations

from .model import STERN

__all__ = ["OFFICIAL_PREFIXES", "official_key", "load_official_state_dict", "to_official_state_dict"]

OFFICIAL_PREFIXES = {"clmodel.": "classifier.net.", "localization.": "stn.loc.features.", "fc_loc.": "stn.loc.regressor."}


def official_key(name: str) -> str:
    """An official parameter name -> the kit's (``clmodel.features.0.weight`` -> ``classifier.net.features.0.weight``)."""
    name = name.removeprefix("module.")  # saved from nn.DataParallel / DDP
    for theirs, ours in OFFICIAL_PREFIXES.items():
        if name.startswith(theirs):
            return ours + name[len(theirs):]
    raise KeyError(f"{name!r} is not a parameter of the official STERN layout (prefixes {sorted(OFFICIAL_PREFIXES)})")


def load_official_state_dict(model: STERN, state_dict: dict) -> None:
    """Load weights saved from the official STERN code into a kit :class:`STERN`.

    The model must have the official architecture: the default ``STERNConfig`` with variant ``v`` (VGG16,
    3 input channels, localisation net with pool 12 and width 16 on the raw image). With
    ``v = "faithful"`` the outputs then equal the official model's (the official forward
    returns sigmoid(logit)); with ``"bounded"`` the same weights read the regressor's
    four numbers through the kit's bounded window instead. Every tensor must match
    (missing, unexpected or mis-shaped tensors are errors naming them).
    """
    cfg = model.config
    if cfg.backbone != "vgg16" or cfg.in_channels != 3 or cfg.stn is None or cfg.stn.loc_input_size is not None:
        raise ValueError("official weights need the official network: STERNConfig() with variant_config "
                         f"(vgg16, in_channels=3, STN on the raw image), got {cfg}")
    mapped = {official_key(k): v for k, v in state_dict.items()}
    ours = model.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(ours[k].shape)}" for k, v in mapped.items() if k in ours and v.shape != ours[k].shape]
    if bad:
        raise ValueError(f"official tensors of the wrong shape (theirs vs the kit's): {bad}")
    model.load_state_dict(mapped, strict=True)


def to_official_state_dict(model: STERN) -> dict:
    """The inverse of :func:`load_official_state_dict`: the kit's weights under the official names."""
    back = {ours: theirs for theirs, ours in OFFICIAL_PREFIXES.items()}
    out = {}
    for k, v in model.state_dict().items():
        prefix = next((p for p in back if k.startswith(p)), None)
        if prefix is None:
            raise KeyError(f"{k!r} has no place in the official layout")
        out[back[prefix] + k[len(prefix):]] = v
    return out
