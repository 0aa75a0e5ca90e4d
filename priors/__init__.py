"""Object priors: the prior store and the prior algorithms (pure functions on arrays and BoxSets).

The names below are imported lazily (PEP 562 ``__getattr__``): ``from joindet.priors import
PriorStore`` loads only the store, not torch or scipy, so that the command line starts fast.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

#: public name -> the sub-module that defines it.
_LAZY: dict[str, str] = {
    "eigen_attention": "attention",
    "BoxSet": "boxset",
    "BoxSetError": "boxset",
    "Churn": "churn",
    "churn": "churn",
    "match_boxes": "churn",
    "pairwise_iou": "churn",
    "CocoImport": "coco_io",
    "export_coco_results": "coco_io",
    "import_coco": "coco_io",
    "read_coco": "coco_io",
    "centre_tokens": "colour_tokens",
    "colour_tokens": "colour_tokens",
    "instance_priors": "instances",
    "region_priors": "regions",
    "box_smooth": "smooth",
    "random_crops": "sources",
    "selective_search": "sources",
    "AttentionMaps": "store.attention_maps",
    "AttentionStore": "store.attention_maps",
    "PriorStore": "store.store",
    "read_images_table": "store.images",
    "write_images_table": "store.images",
    "CorruptFileError": "store.errors",
    "RunNotFoundError": "store.errors",
    "SchemaVersionError": "store.errors",
    "StoreError": "store.errors",
    "StoreLockedError": "store.errors",
    "VersionExistsError": "store.errors",
    "VersionNotFoundError": "store.errors",
    "STRATEGIES": "updates",
    "update_priors": "updates",
}

__all__ = sorted(_LAZY)

#: names that are both a sub-module and the function it defines: the package exposes the function.
_SHADOWED = frozenset({"churn", "colour_tokens"})


class _Package(ModuleType):
    """Keeps ``joindet.priors.churn`` the function when the import system binds the sub-module
    of the same name to the package (it does so whenever any code imports the sub-module)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, ModuleType):
            value = getattr(value, name)
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
