"""joindet detector: Deformable DETR with the JoinDet heads. Never imports priors."""

from joindet.detector.criterion import SetCriterion, build_criterion
from joindet.detector.deform_attn import MSDeformAttn, ms_deform_attn
from joindet.detector.embedding_target import EmbeddingTarget, build_embedding_target
from joindet.detector.matcher import HungarianMatcher, build_matcher
from joindet.detector.model import JoinDetModel, build_model
from joindet.detector.optim import build_lr_scheduler, build_optimizer
from joindet.detector.postprocess import postprocess
from joindet.detector.presets import PRESETS, DetectorConfig, get_preset
from joindet.detector.weights import LoadReport, WeightsError, load_backbone_weights, load_weights, save_weights

__all__ = [
    "DetectorConfig",
    "PRESETS",
    "get_preset",
    "JoinDetModel",
    "build_model",
    "HungarianMatcher",
    "build_matcher",
    "SetCriterion",
    "build_criterion",
    "EmbeddingTarget",
    "build_embedding_target",
    "build_optimizer",
    "build_lr_scheduler",
    "postprocess",
    "LoadReport",
    "WeightsError",
    "load_backbone_weights",
    "save_weights",
    "load_weights",
    "MSDeformAttn",
    "ms_deform_attn",
]
