"""Arrow schemas of every Parquet table a run directory holds."""

from __future__ import annotations

import pyarrow as pa

#: Box kinds, in the order of their int8 codes in memory (BoxSet.kinds).
KINDS: tuple[str, ...] = ("region", "instance", "smoothed")

#: The dataset index pinned to a run (images.parquet). ``file`` is relative to the data root.
IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
    ]
)

#: Boxes of one kind of one version: normalised xyxy in [0, 1] of the original image.
BOXES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("x0", pa.float32(), nullable=False),
        pa.field("y0", pa.float32(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("kind", pa.dictionary(pa.int8(), pa.string()), nullable=False),
    ]
)

#: Images that could not be read (quarantine.parquet).
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)
