"""The prior store: versions in a run directory, their commit protocol, checks, locks and maps.

``PriorStore`` (store.py) is the entry point; files.py / fs.py do the file I/O, checks.py the
verification, stats.py the manifest statistics, images.py the pinned image index, lock.py the
single-writer lock, attention_maps.py the Zarr eigen-attention maps, errors.py the error types.
"""

from __future__ import annotations

import importlib
from typing import Any

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

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
