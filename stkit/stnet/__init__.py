"""STNet (Qin et al., MICCAI 2023): a Deformable-DETR-style video detector whose queries
attend, with one softmax, to their own frame and to the other frames of a clip
(spatial-temporal deformable attention), with encoder feature shuffle at inference.

    from stkit.stnet import stnet_config, build_stnet, SetCriterion, loss_on_batch
    cfg = stnet_config("quick")                  # "smoke", "quick", "paper"; baseline=True, faithful=True
    model = build_stnet(cfg)
    loss, parts = loss_on_batch(model, SetCriterion(cfg), batch)   # a collated clip batch
    preds = predict_clip(model, batch, mode="shuffle")              # or "per_frame"
    metrics = evaluate_detector(model, val_set)                     # COCO AP, both protocols, fps

Modules: config, backbone, position, attention (STDA), transformer, detector, matcher,
criterion, postprocess, inference, evaluate, bench (a timing script); train (STNetTask on
the kit's generic trainer, which owns the epoch loop and checkpoints) and experiment (run
sizes, training and evaluating variants, as notebook 05 and ``python -m stkit stnet`` do).
"""

from .attention import STDA
from .config import STNetConfig, stnet_config
from .criterion import SetCriterion, loss_on_batch, normalise_targets
from .detector import STNet, build_stnet, param_groups
from .evaluate import coco_eval, evaluate_detector
from .inference import predict_clip
from .postprocess import postprocess, to_coco

__all__ = ["STDA", "STNetConfig", "stnet_config", "SetCriterion", "loss_on_batch",
           "normalise_targets", "STNet", "build_stnet", "param_groups", "coco_eval",
           "evaluate_detector", "predict_clip", "postprocess", "to_coco"]
