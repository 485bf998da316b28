"""STERN (Rocha et al., AIIM 2024; CBMS 2022): an attention spatial transformer crops a
chest X-ray (scale + translation) before a classifier decides normal vs abnormal; two
training stages, the second with a hinge on the crop's aspect ratio.

    from stkit.stern import experiment
    r = experiment.recipe("quick")                     # stkit/recipes/stern_quick.yaml
    model = experiment.build(r, "bounded", seed=0)     # bounded | faithful | baseline | oracle

Modules, the same file names as ``stkit.stnet`` for the same jobs: config (the one home
of the model's numbers), stn (window geometry and the attention STN), model, loss,
window_search, task (STERN on the engine's trainer), evaluate, experiment (recipe ->
data -> training -> metrics), official (the released code's weights).
"""

from .config import DataConfig, STERNConfig, STNConfig, variant_config
from .loss import STERNLoss
from .model import STERN, build_model
from .official import load_official_state_dict, to_official_state_dict

__all__ = ["DataConfig", "STERNConfig", "STNConfig", "variant_config", "STERNLoss", "STERN", "build_model",
           "load_official_state_dict", "to_official_state_dict"]
