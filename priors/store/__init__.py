"""The prior store: versions in a run directory, their commit protocol, checks, locks and maps.

``PriorStore`` (store.py) is the entry point; files.py / fs.py do the file I/O, checks.py the
verification, stats.py the manifest statistics, images.py the pinned image index, lock.py the
single-writer lock, attention_maps.py the Zarr eigen-attention maps, errors.py the error types.
"""

from __future__ import annotations

from joindet.lazy_exports import lazy_exports

#: public name -> the module of this package that defines it; imported on first use (PEP 562) so
#: that reading a manifest does not load zarr (attention_maps.py).
_LAZY: dict[str, str] = {
    "AttentionMaps": "attention_maps",
    "AttentionStore": "attention_maps",
    "CorruptFileError": "errors",
    "RunNotFoundError": "errors",
    "SchemaVersionError": "errors",
    "StoreError": "errors",
    "StoreLockedError": "errors",
    "VersionExistsError": "errors",
    "VersionNotFoundError": "errors",
    "read_images_table": "images",
    "write_images_table": "images",
    "WriterLock": "lock",
    "PriorStore": "store",
}

__all__, __getattr__, __dir__ = lazy_exports(globals(), _LAZY)
