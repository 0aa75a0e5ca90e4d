"""Datasets, robust image loading, transforms and the synthetic scenes dataset.

Entry points: :func:`open_dataset` -> :class:`Dataset` (``index()``, ``load(image_id)``,
``coco_ground_truth()``, ``categories()``, ``fingerprint()``); :class:`MiningTransform`,
:class:`TrainTransform`, :func:`collate`; :func:`low_data_subset`; :func:`generate_synthetic`.

Names are imported on first use (PEP 562 ``__getattr__``): the dataset registry and the
index do not load torch (``transforms`` does), so the command line starts fast.
"""

from __future__ import annotations

from joindet.lazy_exports import lazy_exports

#: public name -> the sub-module that defines it (``synthetic_categories`` is synthetic.categories).
_LAZY: dict[str, str] = {
    "coco_json_dataset": "coco_json",
    "read_json": "coco_json",
    "validate_coco": "coco_json",
    "Dataset": "dataset",
    "index_fingerprint": "dataset",
    "make_index": "dataset",
    "safe_relative": "dataset",
    "IMAGE_SUFFIXES": "decode",
    "decode_image": "decode",
    "header_size": "decode",
    "read_image": "decode",
    "AnnotationError": "errors",
    "DatasetNotFoundError": "errors",
    "ImageLoadError": "errors",
    "folder_dataset": "folders",
    "imagenet_dataset": "folders",
    "DATASET_NAMES": "registry",
    "cache_root": "registry",
    "open_dataset": "registry",
    "synthetic_dataset": "registry",
    "low_data_subset": "subsets",
    "Scene": "synthetic",
    "SyntheticSpec": "synthetic",
    "generate_synthetic": "synthetic",
    "render_scene": "synthetic",
    "scene_rng": "synthetic",
    "IMAGENET_MEAN": "transforms",
    "IMAGENET_STD": "transforms",
    "MiningTransform": "transforms",
    "TrainTransform": "transforms",
    "collate": "transforms",
    "resized_shape": "transforms",
    "to_tensor": "transforms",
    "VOC_CLASSES": "voc",
    "voc_dataset": "voc",
}
__all__, __getattr__, __dir__ = lazy_exports(
    globals(), _LAZY, renamed={"synthetic_categories": ("synthetic", "categories")}
)
