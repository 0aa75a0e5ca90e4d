"""Object priors: the prior store and the prior algorithms (pure functions on arrays and BoxSets)."""

from priors.attention import eigen_attention
from priors.colour_tokens import centre_tokens, colour_tokens
from priors.boxset import BoxSet, BoxSetError
from priors.instances import instance_priors
from priors.regions import region_priors
from priors.smooth import box_smooth
from priors.sources import random_crops, selective_search
from priors.updates import STRATEGIES, update_priors
from priors.churn import Churn, churn, match_boxes, pairwise_iou
from priors.store import PriorStore
from priors.store_errors import (
    CorruptFileError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    VersionExistsError,
    VersionNotFoundError,
)
from priors.store_images import read_images_table, write_images_table
from priors.attention_store import AttentionMaps, AttentionStore
from priors.coco_io import CocoImport, export_coco_results, import_coco, read_coco

__all__ = ["BoxSet", "BoxSetError"]
__all__ += ["Churn", "churn", "match_boxes", "pairwise_iou", "PriorStore", "read_images_table", "write_images_table"]
__all__ += ["CorruptFileError", "RunNotFoundError", "SchemaVersionError", "StoreError", "StoreLockedError"]
__all__ += ["VersionExistsError", "VersionNotFoundError", "AttentionMaps", "AttentionStore"]
__all__ += ["CocoImport", "export_coco_results", "import_coco", "read_coco"]
__all__ += ["eigen_attention", "region_priors", "instance_priors", "box_smooth"]
__all__ += ["update_priors", "STRATEGIES", "random_crops", "selective_search"]
__all__ += ["centre_tokens", "colour_tokens"]
