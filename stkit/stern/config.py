"""STERN's settings: the model config (with its STN's) and the data config, one home per number.

    cfg = STERNConfig()                              # the paper's network: VGG16 behind the official STN
    cfg = variant_config(cfg, "baseline")            # bounded | faithful | baseline | oracle
    STERNConfig.from_dict(cfg.to_dict()) == cfg      # how a checkpoint's record rebuilds it

The defaults are the official STERN network (models.py of the STERN repository); the
run sizes are recipe files (``stkit/recipes/stern_{smoke,quick,paper}.yaml``) that state
only what differs, read by ``stkit.stern.experiment.recipe``. Training settings live in
``stkit.stern.task.StageConfig``. This module builds nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["STNConfig", "STERNConfig", "DataConfig", "VARIANTS", "variant_config", "BACKBONES",
           "PARAMETERISATIONS", "LOC_KERNELS", "min_loc_input_size"]

BACKBONES = ("small", "vgg16", "resnet18", "resnet50", "densenet121")
PARAMETERISATIONS = ("bounded", "faithful")
LOC_KERNELS = (7, 5, 5, 5)  # the official localisation net's four unpadded convolutions
# bounded: the kit's STN; faithful: the official unconstrained theta and its (1, 0.1, 0, 0) start;
# baseline: no STN, the whole image resized to the glimpse size; oracle: the baseline's network
# fed images already cropped to their true thorax box (the paper's detect-then-classify pipeline
# with a perfect detector, stkit.stern.experiment.ThoraxCrops).
VARIANTS = ("bounded", "faithful", "baseline", "oracle")


def min_loc_input_size() -> int:
    """Smallest square input the localisation net's unpadded blocks accept (each keeps >= 1 pixel)."""
    size = 1
    for k in reversed(LOC_KERNELS):
        size = 2 * size + k - 1
    return size


@dataclass(frozen=True)
class STNConfig:
    """Settings of :class:`~stkit.stern.stn.AttentionSTN` (the image channels and glimpse size are the model's)."""

    parameterisation: str = "bounded"  # "bounded" (the kit's default) or "faithful" (official raw theta)
    s_min: float = 0.25  # bounded: smallest scale, i.e. the window spans at least 25 % of a side
    s_max: float = 1.0  # bounded: largest scale (1 = the whole side)
    init_scale: float = 0.625  # bounded: starting scale, mid-range so that ds/draw is largest there
    loc_input_size: int | None = None  # the localisation net sees the image resized to this square; None: raw (official)
    loc_pool: int = 12  # localisation net: adaptive pool before the regressor (official: 12, i.e. 128x12x12 = 18432)
    loc_width: int = 16  # localisation net: channels of the first conv block (official: 16, 32, 64, 128)
    source_size: int | None = None  # sample the glimpse from an antialiased copy of this size; None: raw
    pyramid: bool = False  # sample each window from the pyramid level matched to its sample spacing (official: one grid_sample)

    def __post_init__(self):
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {self.parameterisation!r}")
        if not 0 < self.s_min < self.init_scale < self.s_max <= 1:
            raise ValueError(f"need 0 < s_min < init_scale < s_max <= 1, got s_min={self.s_min}, "
                             f"init_scale={self.init_scale}, s_max={self.s_max}")
        if self.loc_input_size is not None and self.loc_input_size < min_loc_input_size():
            raise ValueError(f"loc_input_size must be >= {min_loc_input_size()}, got {self.loc_input_size}")


@dataclass(frozen=True)
class STERNConfig:
    """Everything that defines a STERN (or no-STN baseline) network; checkpoints store it."""

    backbone: str = "vgg16"  # classifier: one of BACKBONES ("vgg16" is the paper's, last layer -> 1 logit)
    in_channels: int = 3  # image channels the network takes (official: 3; grey radiographs are copied to 3)
    pretrained: bool = False  # ImageNet weights for torchvision backbones (official: False; downloads only when True)
    glimpse_size: tuple[int, int] | None = None  # (h, w) the classifier sees; None: the input size (official)
    backbone_width: int = 32  # "small" backbone: channels of the first block
    backbone_pool: str = "max"  # "small" backbone: "max", "avg" or "flatten" head
    stn: STNConfig | None = STNConfig()  # the attention STN; None: the no-STN baseline

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.glimpse_size is not None:
            object.__setattr__(self, "glimpse_size", tuple(self.glimpse_size))

    def to_dict(self) -> dict:
        """Plain nested dict (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "STERNConfig":
        d = dict(d)
        if d.get("stn") is not None:
            d["stn"] = STNConfig(**d["stn"])
        return cls(**d)


@dataclass(frozen=True)
class DataConfig:
    """How STERN's images are read."""

    image_size: int | None = None  # side the images are read at (the official net needs 254..269 px); None: the files' size


def variant_config(cfg: STERNConfig, variant: str) -> STERNConfig:
    """The model of a variant (:data:`VARIANTS`) on top of a recipe's model."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant in ("baseline", "oracle"):
        return replace(cfg, stn=None)
    if cfg.stn is None:
        raise ValueError(f"variant {variant!r} needs an STN, and the recipe's model has none (stn: null)")
    return replace(cfg, stn=replace(cfg.stn, parameterisation=variant))
