"""STNet (Qin et al., MICCAI 2023): a Deformable-DETR-style video detector whose queries
attend, with one softmax, to their own frame and to the other frames of a clip
(spatial-temporal deformable attention), with encoder feature shuffle at inference.

    from stkit.stnet import experiment
    r = experiment.recipe("quick")                    # stkit/recipes/stnet_quick.yaml
    model = experiment.build(r, "stnet", seed=0)      # stnet | baseline | faithful
    preds = predict_clip(model, batch, mode="shuffle")   # or "per_frame"
    metrics = evaluate_model(model, val_set)          # COCO AP, both protocols, fps

Modules, the same file names as ``stkit.stern`` for the same jobs: config (the one home
of the model's numbers), backbone, position, attention (STDA), transformer, model,
matcher, loss, postprocess, inference, task (STNet on the engine's trainer), evaluate,
experiment (recipe -> data -> training -> metrics), bench (a training-step timing), official
(the released clip model's weights in the faithful model: ``load_official_state_dict``).
"""

from .attention import STDA
from .config import STNetConfig, variant_config
from .evaluate import coco_eval, evaluate_model
from .inference import predict_clip
from .loss import SetCriterion, loss_on_batch, normalise_targets
from .model import STNet, build_model
from .official import load_official_state_dict, to_official_state_dict
from .postprocess import coco_detections, postprocess

__all__ = ["STDA", "STNetConfig", "variant_config", "SetCriterion", "loss_on_batch", "normalise_targets", "STNet",
           "build_model", "coco_eval", "evaluate_model", "predict_clip", "postprocess", "coco_detections",
           "load_official_state_dict", "to_official_state_dict"]
