"""Recipe files: a run's settings as readable, diffable YAML, read strictly into dataclasses.

A recipe has four sections, the same for both papers:

    recipe:  name, kind ("stern" | "stnet"), dataset, and optionally base
    model:   fields of the paper's model config (``stkit.<kind>.config``)
    stages:  a list of the paper's training stages (``stkit.<kind>.task.StageConfig``)
    data:    fields of the paper's data config (image size; clip settings)

A section states only what differs from the dataclass defaults, and each default is
written once, in its dataclass, with a comment. ``recipe.base: <name>`` starts from
another recipe (its sections merged field by field, stages by name), so a copy states
only its own changes, as Deformable DETR's config scripts do. The run sizes are recipes
of the kit, ``stkit/recipes/<kind>_<size>.yaml``.

Strict: an unknown section or field, or a value of the wrong type, is an error naming
the file and the field (a misspelled field would otherwise silently train with the
default). This module reads files; it builds no model and trains nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

HERE = Path(__file__).resolve().parent.parent / "recipes"
SIZES = ("smoke", "quick", "paper")  # the run sizes: a CI check, a 2-core CPU job, the papers' recipes
SECTIONS = ("recipe", "model", "stages", "data")


class RecipeError(ValueError):
    """A recipe file that cannot be read into the kit's configs; the message names file and field."""


@dataclass(frozen=True)
class Recipe:
    name: str  # the recipe's name (recipe.name in the file)
    path: Path  # the file it came from
    dataset: str  # key of stkit.data.datasets.DATASETS
    model: object  # the paper's model config
    stages: list  # the paper's StageConfig objects, run in order
    data: object  # the paper's data config


def recipe_path(kind: str, size_or_path: str | Path) -> Path:
    """A run size (``quick``) -> ``stkit/recipes/<kind>_quick.yaml``; a kit recipe name
    (``stern_paper``) -> that file; a ``.yaml`` path is taken as it is."""
    p = Path(size_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"recipe file {p} not found")
        return p
    own = HERE / (f"{kind}_{p.name}.yaml" if p.name in SIZES else f"{p.name}.yaml")
    if not own.is_file():
        known = sorted(q.stem for q in HERE.glob(f"{kind}_*.yaml"))
        raise ValueError(f"no {kind} recipe {str(size_or_path)!r}: give a run size {SIZES}, "
                         f"a kit recipe {known} or a .yaml path")
    return own


def _read(path: Path, kind: str, seen: tuple = ()) -> dict:
    """The file's sections after its ``base`` chain is merged in (the file's own fields win)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise RecipeError(f"{path}: unknown section(s) {unknown}; a recipe has {list(SECTIONS)}")
    head = data.get("recipe") or {}
    if not isinstance(head, dict) or head.get("kind") != kind:
        raise RecipeError(f"{path}: recipe.kind is {head.get('kind') if isinstance(head, dict) else None!r}, expected {kind!r}")
    extra = sorted(set(head) - {"name", "kind", "dataset", "base"})
    if extra:
        raise RecipeError(f"{path}: unknown field(s) recipe.{extra}; allowed: name, kind, dataset, base")
    if "base" not in head:
        return data
    base_path = recipe_path(kind, head["base"])
    if base_path.resolve() in seen:
        raise RecipeError(f"{path}: recipe.base {head['base']!r} leads back to itself")
    return _merge(_read(base_path, kind, seen + (path.resolve(),)), data, path)


def _merge(base: dict, own: dict, path: Path) -> dict:
    """``own`` over ``base``: mappings field by field (recursively), stages matched by name."""
    out = {k: v for k, v in base.items()}
    out["recipe"] = {k: v for k, v in (base.get("recipe") or {}).items() if k != "base"} | (own.get("recipe") or {})
    for section in ("model", "data"):
        if section in own:
            out[section] = _merge_maps(base.get(section) or {}, own[section] or {})
    if "stages" in own:
        stages = [dict(s) for s in base.get("stages") or []]
        names = [s.get("name") for s in stages]
        for s in own["stages"] or []:
            if not isinstance(s, dict) or "name" not in s:
                raise RecipeError(f"{path}: each stage over a base recipe needs a name (to match or add)")
            if s["name"] in names:
                stages[names.index(s["name"])].update(s)
            else:
                stages.append(dict(s))
        out["stages"] = stages
    return out


def _merge_maps(base: dict, own: dict) -> dict:
    out = dict(base)
    for k, v in own.items():
        out[k] = _merge_maps(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


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
    """``cls(**values, **fixed)`` after refusing unknown fields and values of the wrong type.

    A field whose default is itself a dataclass (STERN's ``stn``) is built from its own
    mapping the same way; ``null`` leaves it None."""
    if values is not None and not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping of fields, got {values!r}")
    values = dict(values or {})
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
        if dataclasses.is_dataclass(default) and value is not None:
            values[name] = build(type(default), value, f"{where}.{name}")
        else:
            values[name] = _typed(value, default, f"{where}.{name}")
    try:
        return cls(**values, **fixed)
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{where}: {err}") from None


def load_recipe(kind: str, size_or_path: str | Path, model_cls, stage_cls, data_cls,
                data_fixed: Callable[[object], dict] = lambda model: {}) -> Recipe:
    """A recipe file of ``kind`` -> :class:`Recipe` of the given dataclasses.

    ``data_fixed(model)``: data fields that follow from the model (e.g. STNet's clip
    length) and so may not be set in the data section."""
    path = recipe_path(kind, size_or_path)
    data = _read(path, kind)
    model = build(model_cls, data.get("model"), f"{path}: model")
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise RecipeError(f"{path}: 'stages' must be a non-empty list of stages")
    built = [build(stage_cls, s, f"{path}: stages[{i}]") for i, s in enumerate(stages)]
    names = [s.name for s in built]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: stage names must be unique, got {names}")
    clip = build(data_cls, data.get("data"), f"{path}: data", **data_fixed(model))
    head = data["recipe"]
    return Recipe(head.get("name", path.stem), path, head.get("dataset", ""), model, built, clip)


def with_stages(r: Recipe, **changes) -> Recipe:
    """``r`` with the given fields replaced in every stage; a None value leaves the recipe's
    (a command line's ``--precision`` or ``--batch-size`` that was not given)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(r, stages=[dataclasses.replace(s, **changes) for s in r.stages])
