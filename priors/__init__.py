"""Object priors: the prior store and the prior algorithms (pure functions on arrays and BoxSets).

The names below are imported lazily (PEP 562 ``__getattr__``): ``from joindet.priors import
PriorStore`` loads only the store, not torch or scipy, so that the command line starts fast.
"""

from __future__ import annotations

from joindet.lazy_exports import lazy_exports

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

#: names that are both a sub-module and the function it defines: the package exposes the function.
__all__, __getattr__, __dir__ = lazy_exports(globals(), _LAZY, shadowed={"churn", "colour_tokens"})
