"""Recipe files: the papers' training recipes as readable, diffable YAML, and their loader.

    stern_chexpert.yaml   STERN on CheXpert (run size "paper" of stkit.recipes)
    stnet_buv.yaml        STNet on BUV (the same STNetConfig as stnet_config("paper"))
    slurm_torchrun.sbatch a SLURM job that starts torchrun with SLURM's rendezvous

    recipe = load_stern_recipe("stern_chexpert")     # a name here, or a path to your copy
    recipe.model, recipe.stages, recipe.image_size  # STERNConfig, [StageConfig], int | None

A recipe file is strict: an unknown section or field, or a value of the wrong type, is an
error naming the file and the field (a misspelled field would otherwise silently train
with the default). This module reads files into the kit's config dataclasses; it does
not train (``stkit.experiment``, ``python -m stkit stern train --config FILE``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


class RecipeError(ValueError):
    """A recipe file that cannot be read into the kit's configs; the message names file and field."""


@dataclass(frozen=True)
class SternRecipe:
    name: str  # the recipe's name (recipe.name in the file)
    path: Path  # the file it came from
    dataset: str  # key of stkit.paper.DATASETS
    model: object  # stkit.stern.STERNConfig (bounded STN; the variant is chosen per run)
    stages: list  # [stkit.train.StageConfig], run in order
    image_size: int | None  # the side images are read at (None: the files' size)


@dataclass(frozen=True)
class StnetRecipe:
    name: str
    path: Path
    dataset: str
    model: object  # stkit.stnet.STNetConfig
    stage: object  # stkit.trainer.Stage built from the model's optimiser fields + the train section
    clip: object  # stkit.data.video.ClipConfig (clip length from the model)


def recipe_path(name_or_path: str | Path) -> Path:
    """``stern_chexpert`` -> this folder's ``stern_chexpert.yaml``; a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"recipe file {p} not found")
        return p
    own = HERE / f"{p.name}.yaml"
    if not own.is_file():
        known = sorted(q.stem for q in HERE.glob("*.yaml"))
        raise FileNotFoundError(f"no recipe named {str(name_or_path)!r}; the kit's recipes: {known} (or give a .yaml path)")
    return own


def read_yaml(path: Path, kind: str, sections: set[str]) -> dict:
    """The file's mapping, after checking its ``recipe.kind`` and its section names."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    head = data.get("recipe") or {}
    if not isinstance(head, dict) or head.get("kind") != kind:
        raise RecipeError(f"{path}: recipe.kind is {head.get('kind') if isinstance(head, dict) else None!r}, expected {kind!r}")
    unknown = sorted(set(data) - sections - {"recipe"})
    if unknown:
        raise RecipeError(f"{path}: unknown section(s) {unknown}; a {kind} recipe has {sorted(sections | {'recipe'})}")
    extra = sorted(set(head) - {"name", "kind", "dataset"})
    if extra:
        raise RecipeError(f"{path}: unknown field(s) recipe.{extra}; allowed: name, kind, dataset")
    return data


def _typed(value, default, where: str):
    """``value`` checked against the type of the field's default (ints are accepted for floats)."""
    if default is None or value is None:
        return tuple(value) if isinstance(value, list) else value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise RecipeError(f"{where}: expected {type(default).__name__}, got {value!r}")
    return value


def build(cls, values: dict | None, where: str, **fixed):
    """``cls(**values, **fixed)`` after refusing unknown fields and values of the wrong type."""
    values = dict(values or {})
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping of fields")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    taken = sorted(set(values) & set(fixed))
    if taken:
        raise RecipeError(f"{where}: field(s) {taken} are set elsewhere in the recipe (one place for each number)")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RecipeError(f"{where}: unknown field(s) {unknown}; {cls.__name__} has {sorted(fields)}")
    for name, value in values.items():
        f = fields[name]
        default = f.default if f.default is not dataclasses.MISSING else None
        values[name] = _typed(value, default, f"{where}.{name}")
    try:
        return cls(**values, **fixed)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{where}: {err}") from None


def load_stern_recipe(name_or_path: str | Path) -> SternRecipe:
    """A STERN recipe file -> :class:`SternRecipe` (bounded STN; variants come from the run)."""
    from ..stern import STERNConfig
    from ..stn import STNConfig
    from ..train import StageConfig

    path = recipe_path(name_or_path)
    data = read_yaml(path, "stern", {"model", "stages", "data"})
    model = dict(data.get("model") or {})
    stn = model.pop("stn", {})
    stn_cfg = None if stn is None else build(STNConfig, stn, f"{path}: model.stn")
    cfg = build(STERNConfig, model, f"{path}: model", stn=stn_cfg)
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise RecipeError(f"{path}: 'stages' must be a non-empty list of stages")
    built = [build(StageConfig, s, f"{path}: stages[{i}]") for i, s in enumerate(stages)]
    names = [s.name for s in built]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: stage names must be unique, got {names}")
    extra = sorted(set(data.get("data") or {}) - {"image_size"})
    if extra:
        raise RecipeError(f"{path}: unknown field(s) data.{extra}; allowed: image_size")
    size = (data.get("data") or {}).get("image_size")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise RecipeError(f"{path}: data.image_size must be a positive integer or null, got {size!r}")
    head = data["recipe"]
    return SternRecipe(head.get("name", path.stem), path, head.get("dataset", ""), cfg, built, size)


def load_stnet_recipe(name_or_path: str | Path) -> StnetRecipe:
    """An STNet recipe file -> :class:`StnetRecipe` (model, training stage, clip settings)."""
    from ..data.video import ClipConfig
    from ..stnet.config import STNetConfig
    from ..trainer import Stage

    path = recipe_path(name_or_path)
    data = read_yaml(path, "stnet", {"model", "train", "data"})
    cfg = build(STNetConfig, data.get("model"), f"{path}: model")
    try:
        cfg.check()
    except ValueError as err:
        raise RecipeError(f"{path}: model: {err}") from None
    # one place for each number: the optimiser settings live in the model section
    stage = build(Stage, data.get("train"), f"{path}: train", name="train", epochs=cfg.epochs, lr=cfg.lr,
                  weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, schedule="step",
                  lr_drop_epoch=cfg.lr_drop, lr_drop_factor=0.1, clip_grad=cfg.clip_max_norm)
    clip = build(ClipConfig, data.get("data"), f"{path}: data", n_support=cfg.n_support, n_global=cfg.n_global)
    head = data["recipe"]
    return StnetRecipe(head.get("name", path.stem), path, head.get("dataset", ""), cfg, stage, clip)
