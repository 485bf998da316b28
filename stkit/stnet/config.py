"""STNet's model settings: one dataclass, the one home of each number, and its variants.

    cfg = STNetConfig()                          # the released STNet network (ResNet-50, 300 queries)
    cfg = variant_config(cfg, "baseline")        # stnet | baseline | faithful
    STNetConfig.from_dict(cfg.to_dict()) == cfg  # how a checkpoint's record rebuilds it

Only the model and its losses live here: the optimiser settings are the training stage's
(``stkit.stnet.task.StageConfig``) and the data settings the clip dataset's
(``stkit.data.video.ClipConfig``). The run sizes are recipe files
(``stkit/recipes/stnet_{smoke,quick,paper}.yaml``) that state only what differs from
these defaults. This module builds nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

__all__ = ["STNetConfig", "VARIANTS", "OBJECTIVES", "variant_config"]

# stnet: the kit's default; baseline: the single-frame detector (no temporal points);
# faithful: the released clip model and its training (see ``faithful`` and ``objective`` below)
VARIANTS = ("stnet", "baseline", "faithful")

# What the training loss supervises (the released code has two training paths, neither of
# which is the kit's default):
#   key_frame      the kit: the key frame's predictions against the key frame's boxes.
#   three_frames   engines/clip_predict_engine.py: the clip model decodes key, key-1 and
#                  key+1; the mean of the three losses, each against its own frame's boxes.
#   split_queries  main.py (models/temporal_ms_deform_detr.py): the queries split into T
#                  groups, group t decodes frame t of the clip (self-attention over all of
#                  them), and all Q predictions are the key frame's, matched to its boxes.
OBJECTIVES = ("key_frame", "three_frames", "split_queries")


@dataclass(frozen=True)
class STNetConfig:
    """Everything that defines an STNet (or single-frame baseline) network; checkpoints store it.

    The network defaults are the released clip model's (``configs/test.sh`` of the released
    code; its training recipe is not in the repository); the run sizes' recipes state what
    differs. Where the default departs from the release the comment says "released:" and
    why; ``faithful`` (the variant of that name) turns every such departure off."""

    # --- clip
    n_support: int = 2               # neighbouring frames after the key (key-1, key+1, ...)
    n_global: int = 3                # random frames of the same video (official: 3, 6-frame clips)
    # --- backbone and pyramid
    backbone: str = "resnet50"       # torchvision "resnet50" (official) or "resnet18"
    pretrained: bool = True          # ImageNet weights (official; needs a download or the cache); False: random init
                                     # (resnet50: torchvision's IMAGENET1K_V2, better than V1; released and
                                     # faithful: V1, what resnet50(pretrained=True) loads)
    n_levels: int = 4                # C3, C4, C5 and a stride-2 conv on C5
    # --- transformer
    d_model: int = 256               # channels of every token
    n_heads: int = 8                 # attention heads M (released: the decoder's self-attention has 8 whatever
                                     # this says, and so has faithful's)
    ffn_dim: int = 1024              # hidden width of the feed-forward blocks
    dropout: float = 0.1             # dropout in attention outputs and FFNs
    enc_layers: int = 6              # ST-encoder layers
    dec_layers: int = 6              # ST-decoder layers
    enc_points: int = 4              # K_c: encoder points per level on the query's own frame
    enc_temporal_points: int = 2     # K_t: encoder points per level on each other frame
    dec_points: int = 4              # K_c of the decoder
    dec_temporal_points: int = 4     # K_t of the decoder
    num_queries: int = 300           # object queries per decoded frame
    num_classes: int = 2             # logits; channel k is category id k+1 (benign, malignant); released: 3,
                                     # channel 0 a background no box has (stkit.stnet.official drops it; the
                                     # release's focal loss keeps a term for it, about 2e-5 of the loss)
    # --- variants
    baseline: bool = False           # single-frame detector: no temporal points at all
    faithful: bool = False           # the released clip model: its init (xavier_uniform_ on every transformer
                                     # weight, biases as PyTorch draws them, never Deformable DETR's ring of
                                     # offsets; the -2 box-size bias on decoder layer 0's head only), the last
                                     # decoder layer's loss only and V1 ImageNet weights. The kit's default
                                     # keeps DETR's attention init (sampling starts on a ring around the
                                     # reference, not at random) and supervises every layer (the later box
                                     # heads otherwise get no gradient and stay at their init)
    objective: str = "key_frame"     # what the loss supervises, one of OBJECTIVES (see there); the faithful
                                     # variant makes key_frame three_frames (the released clip engine)
    # --- loss and matching (Deformable DETR / STNet defaults)
    focal_alpha: float = 0.25        # sigmoid focal loss alpha
    focal_gamma: float = 2.0         # sigmoid focal loss gamma
    cls_weight: float = 2.0          # weight of the focal classification loss
    l1_weight: float = 5.0           # weight of the L1 box loss (normalised cxcywh)
    giou_weight: float = 2.0         # weight of the 1 - GIoU loss
    cost_class: float = 2.0          # matcher: classification cost
    cost_bbox: float = 5.0           # matcher: L1 cost
    cost_giou: float = 2.0           # matcher: -GIoU cost
    # --- inference
    shuffle_frames: int = 3          # frames decoded per encoder pass (key, key-1, key+1)
    num_detections: int = 100        # top-k (query, class) pairs kept per frame

    @property
    def n_frames(self) -> int:
        """T, the clip length the model is built for: key + support + global frames."""
        return 1 + self.n_support + self.n_global

    @property
    def temporal(self) -> bool:
        """Whether queries sample the other frames (False for the baseline or 1-frame clips)."""
        return not self.baseline and self.n_frames > 1

    @property
    def aux_loss(self) -> bool:
        """Supervise every decoder layer (the released code supervises only the last)."""
        return not self.faithful

    @property
    def query_groups(self) -> int:
        """Query groups per decoded item: T with ``split_queries`` (one per frame), else 1."""
        return self.n_frames if self.objective == "split_queries" else 1

    @property
    def imagenet_weights(self) -> str | None:
        """The torchvision weight set of the backbone (None: random init)."""
        if not self.pretrained:
            return None
        return "IMAGENET1K_V1" if self.faithful or self.backbone != "resnet50" else "IMAGENET1K_V2"

    def to_dict(self) -> dict:
        """Plain dict (what a checkpoint stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "STNetConfig":
        return cls(**d)

    def __post_init__(self):
        if self.backbone not in ("resnet18", "resnet50"):
            raise ValueError(f"STNetConfig.backbone={self.backbone!r}; expected resnet18 or resnet50")
        if self.d_model % self.n_heads or (self.faithful and self.d_model % 8):
            raise ValueError(f"STNetConfig: d_model={self.d_model} must divide by n_heads={self.n_heads} "
                             "(and by 8 for faithful, whose decoder self-attention has 8 heads)")
        if self.n_levels != 4:
            raise ValueError("STNetConfig.n_levels must be 4 (C3-C5 and one extra level)")
        if not 1 <= self.shuffle_frames <= self.n_frames:
            raise ValueError(f"STNetConfig.shuffle_frames={self.shuffle_frames} must be in "
                             f"1..n_frames={self.n_frames}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"STNetConfig.objective={self.objective!r}; expected one of {OBJECTIVES}")
        if self.objective == "three_frames" and self.shuffle_frames < min(3, self.n_frames):
            raise ValueError("STNetConfig: objective three_frames decodes key, key-1 and key+1: "
                             f"shuffle_frames must be >= 3, got {self.shuffle_frames}")
        if self.objective == "split_queries" and (self.num_queries % self.n_frames or self.shuffle_frames != 1):
            raise ValueError(f"STNetConfig: objective split_queries needs num_queries={self.num_queries} to "
                             f"divide by n_frames={self.n_frames} and shuffle_frames=1 (every pass predicts "
                             f"the key frame only), got shuffle_frames={self.shuffle_frames}")


def variant_config(cfg: STNetConfig, variant: str) -> STNetConfig:
    """The model of a variant (:data:`VARIANTS`) on top of a recipe's model. ``faithful``
    trains with the released clip engine's objective unless the recipe names a released one."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown STNet variant {variant!r}; expected one of {VARIANTS}")
    objective = cfg.objective
    if variant == "faithful" and objective == "key_frame":
        objective = "three_frames"
    return replace(cfg, baseline=variant == "baseline", faithful=variant == "faithful", objective=objective)
