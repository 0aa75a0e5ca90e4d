"""joindet detector: Deformable DETR with the JoinDet heads. Never imports priors.

Names are imported on first use (PEP 562 ``__getattr__``), so importing ``joindet.detector`` or
one light module of it (``presets``) does not load torch.
"""

from __future__ import annotations

from joindet.lazy_exports import lazy_exports

#: public name -> the sub-module that defines it.
_LAZY: dict[str, str] = {
    "DetectorConfig": "presets",
    "PRESETS": "presets",
    "get_preset": "presets",
    "JoinDetModel": "model",
    "RandomBackboneWarning": "model",
    "random_backbone_warning": "model",
    "build_model": "model",
    "HungarianMatcher": "matcher",
    "build_matcher": "matcher",
    "SetCriterion": "criterion",
    "build_criterion": "criterion",
    "EmbeddingTarget": "embedding_target",
    "build_embedding_target": "embedding_target",
    "build_optimizer": "optim",
    "build_lr_scheduler": "optim",
    "postprocess": "postprocess",
    "LoadReport": "weights",
    "WeightsError": "weights",
    "load_backbone_weights": "weights",
    "save_weights": "weights",
    "load_weights": "weights",
    "MSDeformAttn": "deform_attn",
    "ms_deform_attn": "deform_attn",
}

#: ``joindet.detector.postprocess`` stays the function once the sub-module of the same name is imported.
__all__, __getattr__, __dir__ = lazy_exports(globals(), _LAZY, shadowed={"postprocess"})
