"""The prior store: versions in a run directory, their commit protocol, checks, locks and maps.

``PriorStore`` (store.py) is the entry point; files.py / fs.py do the file I/O, checks.py the
verification, stats.py the manifest statistics, images.py the pinned image index, lock.py the
single-writer lock, attention_maps.py the Zarr eigen-attention maps, errors.py the error types.
"""

from joindet.priors.store.attention_maps import AttentionMaps, AttentionStore
from joindet.priors.store.errors import (
    CorruptFileError,
    RunNotFoundError,
    SchemaVersionError,
    StoreError,
    StoreLockedError,
    VersionExistsError,
    VersionNotFoundError,
)
from joindet.priors.store.images import read_images_table, write_images_table
from joindet.priors.store.lock import WriterLock
from joindet.priors.store.store import PriorStore

__all__ = [
    "AttentionMaps",
    "AttentionStore",
    "CorruptFileError",
    "PriorStore",
    "RunNotFoundError",
    "SchemaVersionError",
    "StoreError",
    "StoreLockedError",
    "VersionExistsError",
    "VersionNotFoundError",
    "WriterLock",
    "read_images_table",
    "write_images_table",
]
