"""STNet's settings as one dataclass, and the presets of the three run sizes.

    cfg = stnet_config("quick", baseline=False)   # or "smoke", "paper"; keywords override

Only the model, its losses and the optimiser settings live here; data settings (short
side, augmentation) belong to the clip dataset's own config. This module builds nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

__all__ = ["STNetConfig", "stnet_config", "SIZES"]

SIZES = ("smoke", "quick", "paper")


@dataclass
class STNetConfig:
    size: str = "quick"              # which preset this came from (for records)
    # --- clip
    n_support: int = 2               # neighbouring frames after the key (key-1, key+1, ...)
    n_global: int = 1                # random frames of the same video
    # --- backbone and pyramid
    backbone: str = "resnet18"       # torchvision "resnet18" or "resnet50"
    pretrained: bool = False         # ImageNet weights (downloads/cache); False: random init
    n_levels: int = 4                # C3, C4, C5 and a stride-2 conv on C5
    # --- transformer
    d_model: int = 64                # channels of every token
    n_heads: int = 4                 # attention heads M
    ffn_dim: int = 256               # hidden width of the feed-forward blocks
    dropout: float = 0.0             # dropout in attention outputs and FFNs
    enc_layers: int = 2              # ST-encoder layers
    dec_layers: int = 2              # ST-decoder layers
    enc_points: int = 4              # K_c: encoder points per level on the query's own frame
    enc_temporal_points: int = 2     # K_t: encoder points per level on each other frame
    dec_points: int = 4              # K_c of the decoder
    dec_temporal_points: int = 4     # K_t of the decoder
    num_queries: int = 30            # object queries per decoded frame
    num_classes: int = 2             # logits; channel k is category id k+1 (benign, malignant)
    # --- variants
    baseline: bool = False           # single-frame detector: no temporal points at all
    faithful: bool = False           # as released: no DETR init of attention heads, last-layer loss only
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
    # --- optimiser (used by the training loop)
    lr: float = 2e-4                 # AdamW learning rate of the transformer and heads
    lr_backbone_mult: float = 1.0    # backbone lr = lr * this (0 freezes the backbone)
    lr_linear_proj_mult: float = 0.1  # lr multiplier of offset heads and reference points
    weight_decay: float = 1e-4       # AdamW weight decay
    clip_max_norm: float = 0.1       # gradient clipping (max total norm)
    epochs: int = 6                  # training epochs
    lr_drop: int = 5                 # epoch after which the lr is divided by 10
    batch_size: int = 2              # clips per step, over all processes

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

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> "STNetConfig":
        if self.backbone not in ("resnet18", "resnet50"):
            raise ValueError(f"STNetConfig.backbone={self.backbone!r}; expected resnet18 or resnet50")
        if self.d_model % self.n_heads:
            raise ValueError(f"STNetConfig: d_model={self.d_model} must divide by n_heads={self.n_heads}")
        if self.n_levels != 4:
            raise ValueError("STNetConfig.n_levels must be 4 (C3-C5 and one extra level)")
        if not 1 <= self.shuffle_frames <= self.n_frames:
            raise ValueError(f"STNetConfig.shuffle_frames={self.shuffle_frames} must be in "
                             f"1..n_frames={self.n_frames}")
        return self


_PRESETS = {
    # seconds on a CPU: tiny everything, 3-frame clips
    "smoke": dict(size="smoke", n_support=2, n_global=0, d_model=32, n_heads=2, ffn_dim=64,
                  enc_layers=1, dec_layers=1, enc_points=2, enc_temporal_points=1,
                  dec_points=2, dec_temporal_points=2, num_queries=8, num_detections=20,
                  epochs=1, lr_drop=1, batch_size=2),
    # a small detector on a 2-core CPU in minutes (frames ~128x160, clips key, key+-1, 1 global)
    "quick": dict(size="quick"),
    # the official STNet defaults (REFERENCE.md section 2)
    "paper": dict(size="paper", n_support=2, n_global=3, backbone="resnet50", pretrained=True,
                  d_model=256, n_heads=8, ffn_dim=1024, dropout=0.1, enc_layers=6,
                  dec_layers=6, enc_points=4, enc_temporal_points=2, dec_points=4,
                  dec_temporal_points=4, num_queries=300, lr=5e-5, lr_backbone_mult=0.4,
                  epochs=50, lr_drop=40, batch_size=1),
}


def stnet_config(size: str = "quick", **overrides) -> STNetConfig:
    """The preset of a run size (``smoke``, ``quick``, ``paper``) with keyword overrides."""
    if size not in _PRESETS:
        raise ValueError(f"unknown STNet size {size!r}; expected one of {', '.join(SIZES)}")
    names = {f.name for f in fields(STNetConfig)}
    bad = sorted(set(overrides) - names)
    if bad:
        raise ValueError(f"unknown STNetConfig field(s): {', '.join(bad)}")
    return replace(STNetConfig(**_PRESETS[size]), **overrides).check()
