"""Run-size recipes for STERN: model settings and training stages per size.

- ``smoke``: seconds on a CPU; checks that everything runs (CI).
- ``quick``: minutes on a 2-core CPU; the synthetic chest X-rays at 256 px, a small CNN
  behind the STN looking at a 64x64 glimpse, real learning.
- ``paper``: the paper's model, exactly the official network (VGG16 on 256 px inputs with
  3 channels, grey copied to 3, glimpse = input size, official localisation net), for real
  data on GPUs. Its model, stages and image size are the recipe file
  ``stkit/configs/stern_chexpert.yaml``; any other recipe file can stand in for a size
  (``stern_config("my_recipe.yaml")``, ``python -m stkit stern train --config FILE``).

The STERN papers do not publish which layers are frozen per stage, the optimiser, the
learning rates or the epochs. The kit's choice, used by every size: stage 1 trains the
whole network with BCE; stage 2 fine-tunes the whole network at a lower learning rate
with the aspect-ratio term (lambda = 1, Sf = 1.25, the only value the official code
shows). ``StageConfig.freeze`` changes what trains, e.g. ``("classifier",)`` for a
stage 2 that only moves the window.

The localisation net has its own parameter group and learning rate (``stn_lr``), a tenth
of the classifier's. Why: the window should move only once the classifier can tell what a
better view is worth. Public STN recipes give the localiser a much lower rate (the
original Caffe/Torch code scales it by 1e-3 to 1e-4; RA-CNN alternates localiser-only and
classifier-only phases). Measured on the quick synthetic set (seed 0, first epochs of
stage 1): at the classifier's rate (2e-3) the mean window area fell from 0.39 to 0.25 in
two epochs while the validation AUC stayed at chance (0.47): the window shrank on noise,
before any lesion signal existed.
"""

from __future__ import annotations

from dataclasses import replace

from .configs import load_stern_recipe
from .stern import STERNConfig
from .stn import STNConfig
from .train import StageConfig

PAPER = load_stern_recipe("stern_chexpert")  # the paper recipe, read from its YAML file

VARIANTS = ("bounded", "faithful", "baseline", "oracle")

MODELS = {
    "smoke": STERNConfig(backbone="small", backbone_width=8, glimpse_size=(32, 32),
                         stn=STNConfig(loc_input_size=80, loc_pool=1, loc_width=4, pyramid=True)),
    # 256 px canvas, 64 px glimpse: the classifier's input is a quarter of the canvas side, so
    # zooming onto the thorax (a third to a half of the canvas) gains 2-3x resolution. The
    # glimpse is read at full resolution through a pyramid (no window aliases); the
    # localisation net needs no detail and sees a 96 px copy.
    "quick": STERNConfig(backbone="small", backbone_width=16, glimpse_size=(64, 64),
                         stn=STNConfig(loc_input_size=96, loc_pool=4, loc_width=8, pyramid=True)),
    # The official network (stkit/configs/stern_chexpert.yaml).
    "paper": PAPER.model,
}

STAGES = {
    "smoke": [
        StageConfig("stage1", epochs=1, lr=2e-3, stn_lr=2e-4, batch_size=16),
        StageConfig("stage2", epochs=1, lr=5e-4, stn_lr=5e-5, batch_size=16, aspect_lambda=1.0),
    ],
    "quick": [
        StageConfig("stage1", epochs=18, lr=2e-3, stn_lr=2e-4, batch_size=32, warmup_epochs=1),
        StageConfig("stage2", epochs=4, lr=3e-4, stn_lr=3e-5, batch_size=32, aspect_lambda=1.0),
    ],
    "paper": PAPER.stages,  # stkit/configs/stern_chexpert.yaml
}

# Image size the data is read at; None keeps the files' size (the synthetic sets are 128 / 256 px).
IMAGE_SIZE = {"smoke": None, "quick": None, "paper": PAPER.image_size}


def _base(size: str) -> tuple[STERNConfig, list[StageConfig], int | None]:
    """(model, stages, image size) of a run size, or of a recipe file given by its path."""
    if size in MODELS:
        return MODELS[size], STAGES[size], IMAGE_SIZE[size]
    if str(size).endswith((".yaml", ".yml")):
        r = load_stern_recipe(size)
        return r.model, r.stages, r.image_size
    raise ValueError(f"run size must be one of {tuple(MODELS)} or a recipe file (.yaml), got {size!r}")


def image_size(size: str) -> int | None:
    """The side images are read at for a run size or recipe file (None: the files' size)."""
    return _base(size)[2]


def stern_config(size: str, variant: str = "bounded") -> STERNConfig:
    """The :class:`~stkit.stern.STERNConfig` of a run size and variant.

    ``bounded``: the kit's default STN; ``faithful``: the official unconstrained theta and
    its (1, 0.1, 0, 0) start; ``baseline``: no STN, the classifier sees the whole image
    resized to the glimpse size; ``oracle``: the same network as the baseline, fed images
    already cropped to their true thorax box (``stkit.experiment.ThoraxCrops``), the
    analogue of the paper's detect-then-classify pipeline.
    """
    _check(size, variant)
    cfg = _base(size)[0]
    if variant in ("baseline", "oracle"):
        return replace(cfg, stn=None)
    return replace(cfg, stn=replace(cfg.stn, parameterisation=variant))


def stern_stages(size: str, variant: str = "bounded") -> list[StageConfig]:
    """The training stages for a size. The baseline has no window, so it gets only stage 1,
    lengthened by stage 2's epochs so that it trains for the same budget."""
    _check(size, variant)
    stages = [replace(s) for s in _base(size)[1]]
    if variant in ("baseline", "oracle"):
        s1 = stages[0]
        return [replace(s1, epochs=sum(s.epochs for s in stages), stn_lr=None)]
    if variant == "faithful":  # the official loss: BCE on probabilities + unit-weight hinge
        stages = [replace(s, faithful_loss=True) for s in stages]
    return stages


def _check(size: str, variant: str) -> None:
    _base(size)  # an unknown size or a bad recipe file fails here
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
