"""Eigen-attention maps of one version: ``RUN/attention/vNNNN.zarr`` (layout: storage_schema.attention).

float16 maps, NaN-padded to ``max_h x max_w``, one inner chunk per image inside shard files of up
to ``ATTENTION_IMAGES_PER_SHARD`` images (Zarr v3 sharding codec). ``create`` fixes the image rows
once, grouped by mining shard (``groups``): each group's rows start on a shard-file boundary, so
workers of different groups never write the same file. A group's worker writes through
:meth:`AttentionMaps.writer`: maps are buffered per batch (the group stays open, the id index is
read once) and each shard file is written once, whole. Reads go per image. Local paths; Zarr's
store abstraction carries URLs later.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import zarr

from joindet.priors.store.errors import CorruptFileError, SchemaVersionError, StoreError, VersionNotFoundError
from joindet.storage_schema import ATTENTION_LAYOUT, ATTENTION_MAX_SIDE, SCHEMA_VERSION
from joindet.storage_schema.attention import (
    ATTENTION_ARRAY,
    ATTENTION_DTYPE,
    ATTENTION_IDS,
    ATTENTION_IMAGES_PER_SHARD,
    ATTENTION_LAYOUTS,
    ATTENTION_ROWS,
)

ATTENTION_DIR = "attention"
_DEFAULT_HW = (ATTENTION_MAX_SIDE, ATTENTION_MAX_SIDE)


class AttentionLayoutError(StoreError):
    """The version's maps exist with other image ids, map size or row groups."""


def row_layout(image_ids: np.ndarray, groups: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of the maps array for ``image_ids`` grouped by ``groups``.

    ``groups``: contiguous ranges of the sorted ids covering all of them (the mining shards; None:
    one group). Returns (sorted unique ids int64 [N], rows int64 [N], images per shard file P):
    group g starts at row ``sum_{j<g} ceil(n_j / P) * P``; P = min(ATTENTION_IMAGES_PER_SHARD, largest group).
    """
    ids = np.unique(np.asarray(image_ids, np.int64))
    parts = [ids] if groups is None else [np.asarray(g, np.int64) for g in groups]
    if not np.array_equal(np.concatenate(parts) if parts else ids[:0], ids):
        raise StoreError("attention row groups must be contiguous ranges of the sorted image ids covering all of them")
    per_file = max(1, min(ATTENTION_IMAGES_PER_SHARD, max((len(p) for p in parts), default=1)))
    rows, base = [], 0
    for p in parts:
        rows.append(base + np.arange(len(p), dtype=np.int64))
        base += math.ceil(len(p) / per_file) * per_file
    return ids, np.concatenate(rows) if rows else ids.copy(), per_file


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
        self,
        version: int,
        image_ids: np.ndarray,
        max_hw: tuple[int, int] = _DEFAULT_HW,
        groups: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Create the arrays for ``image_ids`` (int64 [N], any order; stored sorted), rows grouped by
        ``groups`` (see :func:`row_layout`). Idempotent when called again with the same ids, size
        and groups (each mining worker may call it); otherwise raises AttentionLayoutError."""
        ids, rows, per_file = row_layout(image_ids, groups)
        path = self.path(version)
        if (path / "zarr.json").exists():
            have = self.maps(version)
            same_rows = have.rows_per_file == per_file and np.array_equal(have.rows, rows)
            if have.max_hw != (int(max_hw[0]), int(max_hw[1])) or not (np.array_equal(have.ids, ids) and same_rows):
                raise AttentionLayoutError(
                    f"{path} exists with other image ids, map size or row groups; remove it or use another version"
                )
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
        group.create_array(ATTENTION_ROWS, data=rows, chunks=(max(len(rows), 1),))
        num_rows = max(int(rows[-1]) + 1 if len(rows) else 1, 1)
        group.create_array(
            ATTENTION_ARRAY,
            shape=(num_rows, *max_hw),
            shards=(per_file, *max_hw),
            chunks=(1, *max_hw),
            dtype=ATTENTION_DTYPE,
            fill_value=np.nan,
        )
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "zarr.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            self.create(version, image_ids, max_hw, groups)  # validate the winner's layout

    def remove(self, version: int) -> None:
        """Delete the maps of ``version`` (renamed aside first, so no reader sees half a group)."""
        path = self.path(version)
        if path.exists():
            aside = path.with_name(f".{path.name}.removed-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.rename(path, aside)
            shutil.rmtree(aside, ignore_errors=True)

    def write(self, version: int, image_id: int, attention: np.ndarray) -> None:
        """Store one map, float [h, w] (h <= max_h, w <= max_w), as float16 (rewrites its shard file;
        a worker writing many maps uses ``maps(version).writer(ids)``)."""
        self.maps(version).write(image_id, attention)

    def read(self, version: int, image_id: int) -> np.ndarray | None:
        """The map of one image as float32 [h, w], or None when none was written."""
        return self.maps(version).read(image_id)

    def maps(self, version: int) -> AttentionMaps:
        """The maps of ``version``, opened once (reads and writes reuse the group and its id index)."""
        return AttentionMaps(self, version)

    @classmethod
    def open_or_create(
        cls,
        path: str | Path,
        image_ids: np.ndarray,
        version: int,
        max_hw: tuple[int, int] = _DEFAULT_HW,
        groups: Sequence[np.ndarray] | None = None,
    ) -> AttentionMaps:
        """The maps of one version given its ``.../attention/vNNNN.zarr`` path, created for
        ``image_ids`` (rows grouped by ``groups``) if it does not exist yet (see ``create``)."""
        path = Path(path)
        if path.parent.name != ATTENTION_DIR or path.name != f"v{version:04d}.zarr":
            raise StoreError(f"{path}: attention maps live at RUN/{ATTENTION_DIR}/v{version:04d}.zarr")
        store = cls(path.parent.parent)
        store.create(version, image_ids, max_hw, groups)
        return store.maps(version)

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
        if group.attrs.get("layout") not in ATTENTION_LAYOUTS:
            raise SchemaVersionError(f"{path}: layout {group.attrs.get('layout')!r} is not one of {ATTENTION_LAYOUTS}")
        return group


class AttentionMaps:
    """The maps of one version, opened once: ``write(image_id, map)``, ``read(image_id)``,
    ``writer(ids)`` for a mining shard's batches. Reads the id index once, at opening."""

    def __init__(self, store: AttentionStore, version: int) -> None:
        self.store = store
        self.version = version
        group = store._open(version)
        self.array = group[ATTENTION_ARRAY]
        self.max_hw = (int(group.attrs["max_h"]), int(group.attrs["max_w"]))
        self.ids = np.asarray(group[ATTENTION_IDS][:], np.int64)
        # padded-nan-v1 has no rows array: row = position in image_ids, one chunk (file) per image.
        self.rows = (
            np.asarray(group[ATTENTION_ROWS][:], np.int64) if ATTENTION_ROWS in group else np.arange(len(self.ids))
        )
        shards = getattr(self.array, "shards", None)
        self.rows_per_file = int((shards or self.array.chunks)[0])

    def row(self, image_id: int) -> int:
        k = int(np.searchsorted(self.ids, image_id))
        if k >= len(self.ids) or self.ids[k] != image_id:
            raise StoreError(f"image {image_id} is not among the images of attention version {self.version}")
        return int(self.rows[k])

    def padded(self, image_id: int, attention: np.ndarray) -> np.ndarray:
        """``attention`` float [h, w] checked (within max_h x max_w, finite) as float16 [h, w]."""
        m = np.asarray(attention, np.float32)
        max_h, max_w = self.max_hw
        if m.ndim != 2 or m.shape[0] > max_h or m.shape[1] > max_w or 0 in m.shape:
            raise StoreError(
                f"attention map of image {image_id} has shape {list(m.shape)}; expected [h, w] within {max_h} x {max_w}"
            )
        if not np.isfinite(m).all():
            raise StoreError(f"attention map of image {image_id} has NaN or infinite values")
        return m.astype(np.float16)

    def write(self, image_id: int, attention: np.ndarray) -> None:
        """Store one map (read-modify-write of its shard file)."""
        m = self.padded(image_id, attention)
        row = self.row(image_id)
        padded = np.full((1, *self.max_hw), np.nan, np.float16)
        padded[0, : m.shape[0], : m.shape[1]] = m
        self.array[row : row + 1] = padded

    def read(self, image_id: int) -> np.ndarray | None:
        """The map of one image as float32 [h, w], or None when none was written."""
        block = np.asarray(self.array[self.row(image_id)], np.float32)
        rows = np.flatnonzero(~np.isnan(block).all(axis=1))
        cols = np.flatnonzero(~np.isnan(block).all(axis=0))
        if not len(rows):
            return None
        return block[: rows[-1] + 1, : cols[-1] + 1]

    def writer(self, image_ids: np.ndarray) -> MapWriter:
        """A buffered writer for the maps of ``image_ids`` (one row group: a mining shard)."""
        return MapWriter(self, image_ids)


class MapWriter:
    """Writes the maps of one row group, shard file by shard file.

    ``add(image_ids, maps)`` per batch (any order; ids of the group); a shard file is written, whole,
    when the next map belongs to another file and at ``close()``, which also writes (NaN) the group's
    files that received no map, so the group's files hold exactly this writer's maps. One writer per
    group at a time; a crash before ``close()`` leaves the files of earlier attempts (the mining
    shard is redone as a whole). Use as a context manager (closes only on success).
    """

    def __init__(self, maps: AttentionMaps, image_ids: np.ndarray) -> None:
        self.maps = maps
        ids = np.unique(np.asarray(image_ids, np.int64))
        rows = np.array([maps.row(int(i)) for i in ids], np.int64)
        self._lo, self._hi = (int(rows.min()), int(rows.max()) + 1) if len(rows) else (0, 0)
        self._ids = set(ids.tolist())
        per = maps.rows_per_file
        self._files = range(self._lo // per, (self._hi - 1) // per + 1) if len(rows) else range(0)
        self._written: set[int] = set()
        self._file: int | None = None
        self._start = 0
        self._buf: np.ndarray | None = None

    def add(self, image_ids: Iterable[int], maps: Iterable[np.ndarray]) -> None:
        """Buffer one batch: ``maps[i]`` float [h_i, w_i] of ``image_ids[i]``."""
        for image_id, attention in zip(image_ids, maps):
            image_id = int(image_id)
            if image_id not in self._ids:
                raise StoreError(f"image {image_id} is not among the images of this attention writer")
            m = self.maps.padded(image_id, attention)
            row = self.maps.row(image_id)
            file = row // self.maps.rows_per_file
            if file != self._file:
                self._flush()
                self._open_file(file)
            self._buf[row - self._start, : m.shape[0], : m.shape[1]] = m

    def close(self) -> None:
        self._flush()
        for file in self._files:
            if file not in self._written:
                self._open_file(file)
                self._flush()

    def __enter__(self) -> MapWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    def _open_file(self, file: int) -> None:
        per = self.maps.rows_per_file
        self._file = file
        self._start = max(file * per, self._lo)
        stop = min((file + 1) * per, self._hi)
        if file in self._written:  # maps came out of order: keep what this file holds already
            self._buf = np.asarray(self.maps.array[self._start : stop], np.float16)
        else:
            self._buf = np.full((stop - self._start, *self.maps.max_hw), np.nan, np.float16)

    def _flush(self) -> None:
        if self._buf is not None and self._file is not None:
            self.maps.array[self._start : self._start + len(self._buf)] = self._buf
            self._written.add(self._file)
        self._buf, self._file = None, None
