"""Eigen-attention maps of one version: ``RUN/attention/vNNNN.zarr`` (layout: storage_schema.attention).

One float16 chunk per image, NaN-padded to ``max_h x max_w``; ``create`` fixes the image rows once,
then any number of workers may ``write`` different images concurrently (they touch different
chunks). Local paths; Zarr's store abstraction carries URLs later.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import zarr

from joindet.priors.store.errors import CorruptFileError, SchemaVersionError, StoreError, VersionNotFoundError
from joindet.storage_schema import ATTENTION_LAYOUT, ATTENTION_MAX_SIDE, SCHEMA_VERSION
from joindet.storage_schema.attention import ATTENTION_ARRAY, ATTENTION_DTYPE, ATTENTION_IDS

ATTENTION_DIR = "attention"


class AttentionStore:
    """Eigen attention maps of the versions of one run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir) / ATTENTION_DIR

    def path(self, version: int) -> Path:
        return self.root / f"v{version:04d}.zarr"

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(
            int(p.name[1:5]) for p in self.root.glob("v[0-9][0-9][0-9][0-9].zarr") if (p / "zarr.json").exists()
        )

    def create(
        self, version: int, image_ids: np.ndarray, max_hw: tuple[int, int] = (ATTENTION_MAX_SIDE, ATTENTION_MAX_SIDE)
    ) -> None:
        """Create the arrays for ``image_ids`` (int64 [N], any order; stored sorted). Idempotent
        when called again with the same ids and size (each mining worker may call it)."""
        ids = np.unique(np.asarray(image_ids, np.int64))
        path = self.path(version)
        if (path / "zarr.json").exists():
            group = self._open(version)
            if (
                group.attrs.get("max_h") != max_hw[0]
                or group.attrs.get("max_w") != max_hw[1]
                or not np.array_equal(group[ATTENTION_IDS][:], ids)
            ):
                raise StoreError(f"{path} exists with other image ids or map size; remove it or use another version")
            return
        # Built under a unique name and renamed into place, so a concurrent creator or a crash
        # mid-creation never leaves a half-made group at ``path``; the loser of a race discards its copy.
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        group = zarr.open_group(str(tmp), mode="w-")
        group.attrs.update(
            {
                "schema_version": SCHEMA_VERSION,
                "version": version,
                "max_h": int(max_hw[0]),
                "max_w": int(max_hw[1]),
                "layout": ATTENTION_LAYOUT,
            }
        )
        group.create_array(ATTENTION_IDS, data=ids, chunks=(max(len(ids), 1),))
        group.create_array(
            ATTENTION_ARRAY, shape=(len(ids), *max_hw), chunks=(1, *max_hw), dtype=ATTENTION_DTYPE, fill_value=np.nan
        )
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "zarr.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            self.create(version, image_ids, max_hw)  # validate the winner's ids and size

    def write(self, version: int, image_id: int, attention: np.ndarray) -> None:
        """Store one map, float [h, w] (h <= max_h, w <= max_w), as float16."""
        group = self._open(version)
        m = np.asarray(attention, np.float32)
        max_h, max_w = group.attrs["max_h"], group.attrs["max_w"]
        if m.ndim != 2 or m.shape[0] > max_h or m.shape[1] > max_w or 0 in m.shape:
            raise StoreError(
                f"attention map of image {image_id} has shape {list(m.shape)}; expected [h, w] within {max_h} x {max_w}"
            )
        if not np.isfinite(m).all():
            raise StoreError(f"attention map of image {image_id} has NaN or infinite values")
        row = self._row(group, image_id, version)
        padded = np.full((1, max_h, max_w), np.nan, np.float16)
        padded[0, : m.shape[0], : m.shape[1]] = m
        group[ATTENTION_ARRAY][row : row + 1] = padded

    def read(self, version: int, image_id: int) -> np.ndarray | None:
        """The map of one image as float32 [h, w], or None when none was written."""
        group = self._open(version)
        block = np.asarray(group[ATTENTION_ARRAY][self._row(group, image_id, version)], np.float32)
        rows = np.flatnonzero(~np.isnan(block).all(axis=1))
        cols = np.flatnonzero(~np.isnan(block).all(axis=0))
        if not len(rows):
            return None
        return block[: rows[-1] + 1, : cols[-1] + 1]

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        image_ids: np.ndarray,
        version: int,
        max_hw: tuple[int, int] = (ATTENTION_MAX_SIDE, ATTENTION_MAX_SIDE),
    ) -> AttentionMaps:
        """The maps of one version given its ``.../attention/vNNNN.zarr`` path, created for
        ``image_ids`` if it does not exist yet (see ``create``)."""
        path = Path(path)
        if path.parent.name != ATTENTION_DIR or path.name != f"v{version:04d}.zarr":
            raise StoreError(f"{path}: attention maps live at RUN/{ATTENTION_DIR}/v{version:04d}.zarr")
        store = cls(path.parent.parent)
        store.create(version, image_ids, max_hw)
        return AttentionMaps(store, version)

    def _open(self, version: int) -> zarr.Group:
        path = self.path(version)
        if not (path / "zarr.json").exists():
            raise VersionNotFoundError(f"no attention maps for version {version} ({path} does not exist)")
        try:
            group = zarr.open_group(str(path), mode="r+")
        except Exception as exc:  # zarr raises many types for damaged stores
            raise CorruptFileError(f"{path} is not a readable Zarr group ({exc})") from None
        if group.attrs.get("schema_version") != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{path}: schema_version {group.attrs.get('schema_version')} is not supported (this joindet "
                f"reads {SCHEMA_VERSION}); use a matching joindet version"
            )
        return group

    @staticmethod
    def _row(group: zarr.Group, image_id: int, version: int) -> int:
        ids = group[ATTENTION_IDS][:]
        row = int(np.searchsorted(ids, image_id))
        if row >= len(ids) or ids[row] != image_id:
            raise StoreError(f"image {image_id} is not among the images of attention version {version}")
        return row


class AttentionMaps:
    """The maps of one version: ``write(image_id, map)`` / ``read(image_id)`` (see AttentionStore)."""

    def __init__(self, store: AttentionStore, version: int) -> None:
        self.store = store
        self.version = version

    def write(self, image_id: int, attention: np.ndarray) -> None:
        self.store.write(self.version, image_id, attention)

    def read(self, image_id: int) -> np.ndarray | None:
        return self.store.read(self.version, image_id)
