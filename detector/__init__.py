"""joindet detector: Deformable DETR with the JoinDet heads. Never imports priors.

Names are imported on first use (PEP 562 ``__getattr__``), so importing ``joindet.detector`` or
one light module of it (``presets``) does not load torch.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

#: public name -> the sub-module that defines it.
_LAZY: dict[str, str] = {
    "DetectorConfig": "presets",
    "PRESETS": "presets",
    "get_preset": "presets",
    "JoinDetModel": "model",
    "RandomBackboneWarning": "model",
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

__all__ = sorted(_LAZY)


class _Package(ModuleType):
    """Keeps ``joindet.detector.postprocess`` the function when the import system binds the
    sub-module of the same name to the package (whenever any code imports the sub-module)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "postprocess" and isinstance(value, ModuleType):
            value = value.postprocess
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
