"""The run's image index, ``RUN/images.parquet`` (IMAGES_SCHEMA): read and write.

``pipeline/run_dir.py`` writes it when a run starts; ``joindet priors import`` writes it when it
creates a run from a COCO annotations JSON. Both go through ``write_images_table``.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from joindet.priors.store.errors import CorruptFileError, RunNotFoundError
from joindet.priors.store.fs import RunFS
from joindet.storage_schema import SchemaError, validate_images_table

IMAGES_FILE = "images.parquet"


def write_images_table(run_dir: str | Path, table: pa.Table) -> str:
    """Validate ``table`` against IMAGES_SCHEMA, sort by image_id, write ``RUN/images.parquet``
    atomically (creating RUN if needed). Returns the file's full path."""
    rfs = RunFS.open(run_dir)
    t = validate_images_table(table, f"images table for {rfs.full(IMAGES_FILE)}")
    t = t.sort_by("image_id")
    sink = pa.BufferOutputStream()
    pq.write_table(t, sink, compression="zstd")
    rfs.mkdir("")
    rfs.write_atomic(IMAGES_FILE, sink.getvalue().to_pybytes())
    return rfs.full(IMAGES_FILE)


def read_images_table(run_dir: str | Path) -> pa.Table:
    """``RUN/images.parquet`` conformed to IMAGES_SCHEMA, sorted by image_id.

    Raises ``RunNotFoundError`` / ``CorruptFileError`` naming the file.
    """
    rfs = RunFS.open(run_dir)
    path = rfs.full(IMAGES_FILE)
    if not rfs.exists(IMAGES_FILE):
        if not rfs.is_dir():
            raise RunNotFoundError(f"run directory {run_dir} does not exist; check the path")
        raise CorruptFileError(f"{path} is missing; the run has no image index")
    try:
        table = pq.read_table(pa.BufferReader(rfs.read_bytes(IMAGES_FILE)))
        return validate_images_table(table, path).sort_by("image_id")
    except SchemaError as exc:
        raise CorruptFileError(str(exc)) from None
    except (pa.ArrowException, OSError) as exc:
        raise CorruptFileError(f"{path} is not a readable Parquet file ({exc})") from None
