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

How the window learns (``quick`` and ``smoke``): from the *smoothed window search*
(``StageConfig.search_sigma``, ``stkit.window_search``), not from the bilinear sampler's
own gradient. Measured on the quick synthetic set (seed 0) with a classifier trained at a
fixed window: the sampler's translation gradient pointed towards the thorax for 51 % of
the validation images (mean cosine 0.008), and localisers trained on it did not move at
any rate tried (stn_lr 2e-4: window-thorax IoU 0.461 after both stages, the same as the
best fixed window; 2e-3 after a 4-epoch classifier warm-up: 0.47); the smoothed estimate
(sigma 0.1, 2 antithetic pairs) pointed towards it for 63 % (mean cosine 0.23). The search
needs a classifier that already works: while it is weak, its losses favour a degenerate
window, which then saturates the bounded scale and stays. Measured (training seeds on the
same data): with the search from the first epoch, seed 2's window grew to the whole image
within 3 epochs; started after a fixed 10- or 12-epoch warm-up, the windows of seeds whose
classifier had reached a validation AUC of 0.61-0.63 shrank to the smallest scale and the
AUC fell to chance, while those started at 0.68-0.87 locked onto the thorax (IoU 0.47 ->
0.6 and more). Hence the quick recipe's ``warmup`` stage: the classifier trains alone, the
localiser frozen at its start window, until the validation AUC reaches 0.85
(``until_score``; at most 20 epochs), then stage 1 moves the window with the search, the
localiser at half the classifier's rate (its own parameter group, ``stn_lr``). The paper
recipe keeps the official training: the sampler's gradient, the localiser at a tenth.
"""

from __future__ import annotations

from dataclasses import replace

from .configs import load_stern_recipe
from .stern import STERNConfig
from .stn import STNConfig
from .train import StageConfig

PAPER = load_stern_recipe("stern_chexpert")  # the paper recipe, read from its YAML file

VARIANTS = ("bounded", "faithful", "baseline", "oracle")
WARMUP = "warmup"  # name of a recipe's classifier warm-up stage (localiser frozen), if it has one

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
        StageConfig("warmup", epochs=1, lr=2e-3, batch_size=16, freeze=("stn",)),
        StageConfig("stage1", epochs=1, lr=2e-3, stn_lr=2e-3, batch_size=16, search_sigma=0.1),
        StageConfig("stage2", epochs=1, lr=5e-4, stn_lr=5e-4, batch_size=16, aspect_lambda=1.0, search_sigma=0.1),
    ],
    "quick": [
        StageConfig("warmup", epochs=20, lr=2e-3, batch_size=32, warmup_epochs=1, freeze=("stn",), until_score=0.85),
        StageConfig("stage1", epochs=16, lr=2e-3, stn_lr=1e-3, batch_size=32, warmup_epochs=2, search_sigma=0.1),
        StageConfig("stage2", epochs=4, lr=3e-4, stn_lr=1.5e-4, batch_size=32, aspect_lambda=1.0, search_sigma=0.1),
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
    """The training stages for a size.

    ``bounded``: as the recipe says (quick: a classifier warm-up with the localiser frozen,
    stage 1, stage 2). ``baseline`` / ``oracle``: no window, so one stage with the first
    stage's settings and every stage's epochs (the same budget). ``faithful``: the official
    training, i.e. no warm-up (its epochs go to stage 1), the official loss (BCE on
    probabilities, unit-weight hinge) and the sampler's own gradient at a tenth of the
    classifier's rate.
    """
    _check(size, variant)
    stages = [replace(s) for s in _base(size)[1]]
    if variant in ("baseline", "oracle"):
        s1 = stages[0]
        return [replace(s1, name="stage1", epochs=sum(s.epochs for s in stages), stn_lr=None, search_sigma=0.0, freeze=(),
                        until_score=None)]
    if variant == "faithful":
        warm = sum(s.epochs for s in stages if s.name == WARMUP)
        stages = [s for s in stages if s.name != WARMUP]
        stages[0] = replace(stages[0], epochs=stages[0].epochs + warm)
        stages = [replace(s, faithful_loss=True, search_sigma=0.0, stn_lr=s.lr / 10) for s in stages]
    return stages


def _check(size: str, variant: str) -> None:
    _base(size)  # an unknown size or a bad recipe file fails here
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
