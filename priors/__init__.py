"""Object priors: the prior store and the prior algorithms (pure functions on arrays and BoxSets)."""

from joindet.priors.attention import eigen_attention
from joindet.priors.boxset import BoxSet, BoxSetError
from joindet.priors.churn import Churn, churn, match_boxes, pairwise_iou
from joindet.priors.coco_io import CocoImport, export_coco_results, import_coco, read_coco
from joindet.priors.colour_tokens import centre_tokens, colour_tokens
from joindet.priors.instances import instance_priors
from joindet.priors.regions import region_priors
from joindet.priors.smooth import box_smooth
from joindet.priors.sources import random_crops, selective_search
from joindet.priors.store import AttentionMaps, AttentionStore, PriorStore, read_images_table, write_images_table
from joindet.priors.store.errors import (
    CorruptFileError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    VersionExistsError,
    VersionNotFoundError,
)
from joindet.priors.updates import STRATEGIES, update_priors

__all__ = ["BoxSet", "BoxSetError"]
__all__ += ["Churn", "churn", "match_boxes", "pairwise_iou", "PriorStore", "read_images_table", "write_images_table"]
__all__ += ["CorruptFileError", "RunNotFoundError", "SchemaVersionError", "StoreError", "StoreLockedError"]
__all__ += ["VersionExistsError", "VersionNotFoundError", "AttentionMaps", "AttentionStore"]
__all__ += ["CocoImport", "export_coco_results", "import_coco", "read_coco"]
__all__ += ["eigen_attention", "region_priors", "instance_priors", "box_smooth"]
__all__ += ["update_priors", "STRATEGIES", "random_crops", "selective_search"]
__all__ += ["centre_tokens", "colour_tokens"]
