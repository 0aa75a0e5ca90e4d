"""Datasets, robust image loading, transforms and the synthetic scenes dataset.

Entry points: :func:`open_dataset` -> :class:`Dataset` (``index()``, ``load(image_id)``,
``coco_ground_truth()``, ``categories()``, ``fingerprint()``); :class:`MiningTransform`,
:class:`TrainTransform`, :func:`collate`; :func:`low_data_subset`; :func:`generate_synthetic`.
"""

from joindet.pipeline.data.coco_json import coco_json_dataset, read_json, validate_coco
from joindet.pipeline.data.dataset import Dataset, index_fingerprint, make_index, safe_relative
from joindet.pipeline.data.decode import IMAGE_SUFFIXES, decode_image, header_size, read_image
from joindet.pipeline.data.errors import AnnotationError, DatasetNotFoundError, ImageLoadError
from joindet.pipeline.data.folders import folder_dataset, imagenet_dataset
from joindet.pipeline.data.registry import DATASET_NAMES, cache_root, open_dataset, synthetic_dataset
from joindet.pipeline.data.subsets import low_data_subset
from joindet.pipeline.data.synthetic import Scene, SyntheticSpec, generate_synthetic, render_scene, scene_rng
from joindet.pipeline.data.synthetic import categories as synthetic_categories
from joindet.pipeline.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MiningTransform,
    TrainTransform,
    collate,
    resized_shape,
    to_tensor,
)
from joindet.pipeline.data.voc import VOC_CLASSES, voc_dataset

__all__ = [
    "AnnotationError", "DATASET_NAMES", "Dataset", "DatasetNotFoundError", "IMAGENET_MEAN",
    "IMAGENET_STD", "IMAGE_SUFFIXES", "ImageLoadError", "MiningTransform", "Scene", "SyntheticSpec",
    "TrainTransform", "VOC_CLASSES", "cache_root", "coco_json_dataset", "collate", "decode_image",
    "folder_dataset", "generate_synthetic", "header_size", "imagenet_dataset", "index_fingerprint",
    "low_data_subset", "make_index", "open_dataset", "read_image", "read_json", "render_scene",
    "resized_shape", "safe_relative", "scene_rng", "synthetic_categories", "synthetic_dataset",
    "to_tensor", "validate_coco", "voc_dataset",
]  # fmt: skip
