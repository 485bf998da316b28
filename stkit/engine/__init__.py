"""The paper-agnostic engine: stage trainer, task protocol, checkpoint format, distributed
training, recipe files and torchvision builders.

    from stkit.engine import Stage, run_stage, run_stages, checkpoint, distributed

Nothing here imports a paper package (``stkit.stern``, ``stkit.stnet``); the papers
import the engine.
"""

from . import checkpoint, distributed
from .recipe import SIZES, Recipe, RecipeError, load_recipe, recipe_path, with_stages
from .task import DatasetTask, Task
from .trainer import Stage, StageResult, run_stage, run_stages, schedule, set_frozen

__all__ = ["checkpoint", "distributed", "SIZES", "Recipe", "RecipeError", "load_recipe", "recipe_path", "with_stages",
           "DatasetTask", "Task", "Stage", "StageResult", "run_stage", "run_stages", "schedule", "set_frozen"]
