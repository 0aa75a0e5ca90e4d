"""BoxSet: a columnar set of boxes over many images.

Boxes are normalised xyxy (x0, y0, x1, y1) as fractions of the original image's width and
height, float32. Rows are sorted by image_id (stable: the order of one image's boxes is kept), so
one image's boxes are one contiguous slice and ``for_image`` is a binary search.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from joindet.storage_schema import BOXES_SCHEMA, KINDS

KIND_CODES = {name: code for code, name in enumerate(KINDS)}


class BoxSetError(ValueError):
    """Raised for malformed box data (NaN/inf coordinates, x1 < x0, wrong shapes)."""


@dataclass(frozen=True)
class BoxSet:
    """Boxes of many images, sorted by image_id.

    Attributes:
        image_ids: int64 [N], non-decreasing.
        boxes: float32 [N, 4], normalised xyxy, x0 <= x1 and y0 <= y1.
        scores: float32 [N].
        kinds: int8 [N], codes into ``storage_schema.KINDS`` (region, instance, smoothed).
    """

    image_ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    kinds: np.ndarray

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        image_ids: Sequence[int] | np.ndarray,
        boxes: Sequence[Sequence[float]] | np.ndarray,
        scores: Sequence[float] | np.ndarray | None = None,
        kinds: str | Sequence[str] | np.ndarray | None = None,
        *,
        assume_sorted: bool = False,
    ) -> BoxSet:
        """Build a BoxSet, validating and sorting by image_id (stable).

        ``kinds`` is one kind name for all rows, a sequence of names, an int8 array of codes, or
        None (meaning "smoothed"). ``scores`` None means 1.0 for every box.
        """
        ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
        b = np.asarray(boxes, dtype=np.float32)
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise BoxSetError(f"boxes must have shape [N, 4], got {list(b.shape)}")
        n = b.shape[0]
        if ids.shape[0] != n:
            raise BoxSetError(f"image_ids has {ids.shape[0]} rows but boxes has {n}")
        s = np.ones(n, np.float32) if scores is None else np.asarray(scores, np.float32).reshape(-1)
        if s.shape[0] != n:
            raise BoxSetError(f"scores has {s.shape[0]} rows but boxes has {n}")
        k = _kind_codes(kinds, n)
        if not np.isfinite(b).all():
            bad = int(np.flatnonzero(~np.isfinite(b).all(axis=1))[0])
            raise BoxSetError(f"box {bad} (image_id {ids[bad]}) has a NaN or infinite coordinate")
        if not np.isfinite(s).all():
            bad = int(np.flatnonzero(~np.isfinite(s))[0])
            raise BoxSetError(f"score {bad} (image_id {ids[bad]}) is NaN or infinite")
        malformed = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])
        if malformed.any():
            bad = int(np.flatnonzero(malformed)[0])
            raise BoxSetError(f"box {bad} (image_id {ids[bad]}) is malformed: {b[bad].tolist()} has x1 < x0 or y1 < y0")
        if not assume_sorted and n and (np.diff(ids) < 0).any():
            order = np.argsort(ids, kind="stable")
            ids, b, s, k = ids[order], b[order], s[order], k[order]
        return cls(ids, np.ascontiguousarray(b), s, k)

    @classmethod
    def empty(cls) -> BoxSet:
        return cls.from_arrays(np.zeros(0, np.int64), np.zeros((0, 4), np.float32))

    @classmethod
    def concat(cls, sets: Iterable[BoxSet]) -> BoxSet:
        """Concatenate several sets (re-sorted by image_id, stable in the given order)."""
        sets = list(sets)
        if not sets:
            return cls.empty()
        return cls.from_arrays(
            np.concatenate([s.image_ids for s in sets]),
            np.concatenate([s.boxes for s in sets]),
            np.concatenate([s.scores for s in sets]),
            np.concatenate([s.kinds for s in sets]),
        )

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return int(self.image_ids.shape[0])

    def span(self, image_id: int) -> tuple[int, int]:
        """Row range [start, stop) of one image's boxes (binary search, O(log N))."""
        lo = int(np.searchsorted(self.image_ids, image_id, side="left"))
        hi = int(np.searchsorted(self.image_ids, image_id, side="right"))
        return lo, hi

    def for_image(self, image_id: int) -> BoxSet:
        lo, hi = self.span(image_id)
        return BoxSet(self.image_ids[lo:hi], self.boxes[lo:hi], self.scores[lo:hi], self.kinds[lo:hi])

    def unique_image_ids(self) -> np.ndarray:
        """Sorted distinct image_ids, int64 [M] (O(N): rows are already sorted)."""
        return self.image_counts()[0]

    def image_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct image_ids int64 [M], number of boxes of each int64 [M]), in O(N)."""
        ids = self.image_ids
        if not len(ids):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return ids[starts], np.diff(np.r_[starts, len(ids)]).astype(np.int64)

    def offsets(self, image_ids: np.ndarray) -> np.ndarray:
        """int64 [len(image_ids) + 1]: rows of image_ids[i] are offsets[i]:offsets[i+1].

        ``image_ids`` must be sorted; images without boxes get an empty slice.
        """
        ids = np.asarray(image_ids, np.int64)
        starts = np.searchsorted(self.image_ids, ids, side="left")
        stops = np.searchsorted(self.image_ids, ids, side="right")
        if len(ids) and (stops[:-1] > starts[1:]).any():
            raise BoxSetError("offsets() needs sorted image_ids")
        return np.concatenate([starts, stops[-1:] if len(ids) else [0]]).astype(np.int64)

    def select(self, mask: np.ndarray) -> BoxSet:
        """Rows where ``mask`` (bool [N]) is true; order kept."""
        return BoxSet(self.image_ids[mask], self.boxes[mask], self.scores[mask], self.kinds[mask])

    def with_kind(self, kind: str) -> BoxSet:
        """The same boxes with every row's kind set to ``kind``."""
        return BoxSet(self.image_ids, self.boxes, self.scores, _kind_codes(kind, len(self)))

    def of_kind(self, kind: str) -> BoxSet:
        return self.select(self.kinds == KIND_CODES[kind])

    def kind_names(self) -> list[str]:
        return [KINDS[int(c)] for c in self.kinds]

    def equals(self, other: BoxSet) -> bool:
        return (
            np.array_equal(self.image_ids, other.image_ids)
            and np.array_equal(self.boxes, other.boxes)
            and np.array_equal(self.scores, other.scores)
            and np.array_equal(self.kinds, other.kinds)
        )

    # ------------------------------------------------------------------ Arrow
    def to_arrow(self) -> pa.Table:
        kind = pa.DictionaryArray.from_arrays(
            pa.array(self.kinds.astype(np.int8), pa.int8()), pa.array(list(KINDS), pa.string())
        )
        cols = [
            pa.array(self.image_ids, pa.int64()),
            *(pa.array(self.boxes[:, i], pa.float32()) for i in range(4)),
            pa.array(self.scores, pa.float32()),
            kind,
        ]
        return pa.Table.from_arrays(cols, schema=BOXES_SCHEMA)

    @classmethod
    def from_arrow(cls, table: pa.Table, *, validate: bool = True) -> BoxSet:
        """Inverse of ``to_arrow``. Columns are looked up by name; extra columns are ignored.

        ``validate=False`` skips the checks of ``from_arrays`` (finite, x0 <= x1, sorted): only for
        tables known to come from a valid BoxSet, e.g. a store file whose sha256 matched. Columns
        are copied once, chunk by chunk, into the [N, 4] box array.
        """
        n = table.num_rows
        boxes = np.empty((n, 4), np.float32)
        for i, name in enumerate(("x0", "y0", "x1", "y1")):
            _fill(boxes[:, i], table.column(name))
        ids = _flat(table.column("image_id"), np.int64)
        scores = _flat(table.column("score"), np.float32)
        codes = _kind_column_codes(table.column("kind"), n)
        if not validate:
            return cls(ids, boxes, scores, codes)
        return cls.from_arrays(ids, boxes, scores, codes)


def _fill(out: np.ndarray, column: pa.ChunkedArray) -> None:
    """Copy a numeric chunked column into ``out`` (a possibly strided view) without concatenating."""
    off = 0
    for chunk in column.chunks:
        k = len(chunk)
        out[off : off + k] = chunk.to_numpy(zero_copy_only=False)
        off += k


def _flat(column: pa.ChunkedArray, dtype: type) -> np.ndarray:
    if column.num_chunks == 1:
        return np.asarray(column.chunk(0).to_numpy(zero_copy_only=False), dtype)
    out = np.empty(len(column), dtype)
    _fill(out, column)
    return out


def _kind_column_codes(column: pa.ChunkedArray, n: int) -> np.ndarray:
    """int8 codes into KINDS of a kind column (dictionary or plain strings)."""
    out = np.empty(n, np.int8)
    off = 0
    for chunk in column.chunks:
        k = len(chunk)
        if pa.types.is_dictionary(chunk.type):
            names = chunk.dictionary.to_pylist()
            try:
                remap = np.array([KIND_CODES[name] for name in names], np.int8)
            except KeyError as exc:
                raise BoxSetError(f"unknown kind {exc.args[0]!r}; expected one of {list(KINDS)}") from None
            idx = chunk.indices.to_numpy(zero_copy_only=False)
            # the store writes the dictionary in KINDS order, so the remap is usually the identity
            out[off : off + k] = idx if names == list(KINDS)[: len(names)] else remap[idx]
        else:
            out[off : off + k] = _kind_codes(np.asarray(chunk.to_pylist(), dtype=object), k)
        off += k
    return out


def _kind_codes(kinds: str | Sequence[str] | np.ndarray | None, n: int) -> np.ndarray:
    if kinds is None:
        kinds = "smoothed"
    if isinstance(kinds, str):
        if kinds not in KIND_CODES:
            raise BoxSetError(f"unknown kind {kinds!r}; expected one of {list(KINDS)}")
        return np.full(n, KIND_CODES[kinds], np.int8)
    arr = np.asarray(kinds)
    if arr.shape[0] != n:
        raise BoxSetError(f"kinds has {arr.shape[0]} rows but boxes has {n}")
    if arr.dtype.kind in "iu":
        if n and (arr.min() < 0 or arr.max() >= len(KINDS)):
            raise BoxSetError(f"kind codes must be in [0, {len(KINDS)})")
        return arr.astype(np.int8)
    try:
        return np.array([KIND_CODES[str(k)] for k in arr], np.int8)
    except KeyError as exc:
        raise BoxSetError(f"unknown kind {exc.args[0]!r}; expected one of {list(KINDS)}") from None
