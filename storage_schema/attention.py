"""Layout of the optional eigen-attention maps, ``attention/vNNNN.zarr`` (Zarr v3 group).

Maps have a different h x w per image (the feature map of each image's own size), so one group
holds:

- ``maps``: float16 ``[num_rows, max_h, max_w]``, fill value NaN, inner chunk ``(1, max_h, max_w)``
  (one image), stored with Zarr v3's sharding codec: a shard file holds up to
  ``ATTENTION_IMAGES_PER_SHARD`` consecutive rows, so a version is a bounded number of files (not
  one per image) and one image is still read alone (the shard's index says where its chunk is).
  The map of the image at row ``r`` is in the top-left ``h x w`` corner of ``maps[r]``; the rest
  stays NaN. A row that is all NaN has no map. Eigenvectors are finite, so NaN is unambiguous.
- ``image_ids``: int64 ``[num_images]``, sorted, written once at creation.
- ``rows``: int64 ``[num_images]``: ``rows[k]`` is the row of ``maps`` holding ``image_ids[k]``.
  The images of one row group (a mining shard: a contiguous range of ``image_ids``) occupy
  consecutive rows starting on a shard boundary, so each shard file belongs to one row group and
  the workers of different mining shards never write the same file. Rows between groups are
  padding (always NaN).
- group attributes: ``schema_version``, ``version``, ``max_h``, ``max_w``, ``layout``.

Layout ``padded-nan-v1`` (runs written before the sharding codec) has no ``rows`` array (row =
position in ``image_ids``) and one chunk file per image; readers accept both.

Values are the eigenvector reshaped to h x w, sign fixed so the foreground side is positive
(DESIGN.md, step 1); their scale is whatever the solver returned (unit-norm vector).
"""

from __future__ import annotations

ATTENTION_DTYPE = "float16"
ATTENTION_ARRAY = "maps"
ATTENTION_IDS = "image_ids"
ATTENTION_ROWS = "rows"
ATTENTION_LAYOUT = "padded-nan-sharded-v2"
#: Layouts readers accept (the first wrote one chunk file per image, row = position in image_ids).
ATTENTION_LAYOUTS = ("padded-nan-v1", ATTENTION_LAYOUT)
#: Most images (rows) in one shard file of ``maps``.
ATTENTION_IMAGES_PER_SHARD = 1024
#: Default largest map side: stride-32 features of images up to 4096 px (1333 px gives 42 cells).
#: The NaN padding compresses to almost nothing, so a generous bound costs little.
ATTENTION_MAX_SIDE = 128
