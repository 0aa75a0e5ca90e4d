"""Validation of tables and documents against the on-disk contract.

Every error is a ``SchemaError`` (a ``ValueError``) whose message names the file (``source``)
and the field, so a user can find and fix the offending input.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from joindet.storage_schema.tables import BOXES_SCHEMA, IMAGES_SCHEMA, KINDS, QUARANTINE_SCHEMA


class SchemaError(ValueError):
    """A table or document does not follow the on-disk contract (message names file and field)."""


class SchemaVersionError(SchemaError):
    """A document was written with a ``schema_version`` this joindet does not read."""


def require(cond: bool, source: str, field: str, problem: str) -> None:
    """Raise ``SchemaError("<source>: field '<field>' <problem>")`` unless ``cond``."""
    if not cond:
        where = f"field '{field}' " if field else ""
        raise SchemaError(f"{source}: {where}{problem}")


def conform(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """Select and cast ``table``'s columns to ``schema`` (extra columns dropped).

    Raises ``SchemaError`` for a missing column, a null in a non-nullable column or a type that
    cannot be cast safely (e.g. strings where numbers are expected).
    """
    cols = []
    for f in schema:
        require(f.name in table.column_names, source, f.name, f"is missing (columns present: {table.column_names})")
        col = table.column(f.name)
        if not f.nullable:
            require(col.null_count == 0, source, f.name, f"has {col.null_count} null values")
        if col.type != f.type:
            try:
                col = col.cast(f.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise SchemaError(
                    f"{source}: field '{f.name}' has type {col.type}, expected {f.type} ({exc})"
                ) from None
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)


def validate_images_table(table: pa.Table, source: str = "images.parquet") -> pa.Table:
    """Conform to ``IMAGES_SCHEMA``; image_id unique, width and height > 0, files non-empty."""
    t = conform(table, IMAGES_SCHEMA, source)
    ids = t.column("image_id").to_numpy()
    require(len(np.unique(ids)) == len(ids), source, "image_id", "has duplicate values")
    for name in ("width", "height"):
        col = t.column(name).to_numpy()
        if len(col) and col.min() <= 0:
            bad = int(ids[int(np.argmin(col))])
            raise SchemaError(f"{source}: field '{name}' must be > 0 (image_id {bad} has {col.min()})")
    import pyarrow.compute as pc  # here, not at the top: priors ls and runs status never need it

    empty = pc.sum(pc.equal(pc.utf8_length(t.column("file")), 0)).as_py() or 0
    require(empty == 0, source, "file", f"has {empty} empty file names")
    return t


def validate_boxes_table(table: pa.Table, source: str, kind: str | None = None) -> pa.Table:
    """Conform to ``BOXES_SCHEMA``; coordinates finite, x0 <= x1, y0 <= y1; kinds known.

    ``kind``: when given, every row must be of that kind (one file holds one kind).
    """
    t = conform(table, BOXES_SCHEMA, source)
    x0, y0, x1, y1 = (t.column(c).to_numpy() for c in ("x0", "y0", "x1", "y1"))
    for name, col in (("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1), ("score", t.column("score").to_numpy())):
        require(bool(np.isfinite(col).all()), source, name, "has NaN or infinite values")
    require(
        bool((x0 <= x1).all() and (y0 <= y1).all()), source, "x1/y1", "must be >= x0/y0 on every row (normalised xyxy)"
    )
    names = set()
    for chunk in t.column("kind").chunks:
        names |= set(chunk.dictionary.to_pylist()) if len(chunk) else set()
    unknown = names - set(KINDS)
    require(not unknown, source, "kind", f"has unknown values {sorted(unknown)}; expected {list(KINDS)}")
    if kind is not None and t.num_rows:
        import pyarrow.compute as pc

        present = set(pc.unique(t.column("kind").cast(pa.string())).to_pylist())
        require(present == {kind}, source, "kind", f"must be {kind!r} on every row, found {sorted(present)}")
    return t


def validate_quarantine_table(table: pa.Table, source: str = "quarantine.parquet") -> pa.Table:
    """Conform to ``QUARANTINE_SCHEMA``."""
    return conform(table, QUARANTINE_SCHEMA, source)
