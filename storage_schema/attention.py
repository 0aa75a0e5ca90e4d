"""Layout of the optional eigen-attention maps, ``attention/vNNNN.zarr`` (Zarr v3 group).

Maps have a different h x w per image (the feature map of each image's own size), so one group
holds:

- ``maps``: float16 ``[num_images, max_h, max_w]``, chunk ``(1, max_h, max_w)`` (one chunk per
  image, so concurrent mining workers never write the same chunk), fill value NaN. The map of
  the image at row ``r`` is stored in the top-left ``h x w`` corner of ``maps[r]``; the rest stays
  NaN. A row that is all NaN has no map. Eigenvectors are finite, so NaN is unambiguous.
- ``image_ids``: int64 ``[num_images]``, sorted, written once at creation: row ``r`` holds the map
  of ``image_ids[r]``.
- group attributes: ``schema_version``, ``version``, ``max_h``, ``max_w``, ``layout``.

Values are the eigenvector reshaped to h x w, sign fixed so the foreground side is positive
(DESIGN.md, step 1); their scale is whatever the solver returned (unit-norm vector).
"""

from __future__ import annotations

ATTENTION_DTYPE = "float16"
ATTENTION_ARRAY = "maps"
ATTENTION_IDS = "image_ids"
ATTENTION_LAYOUT = "padded-nan-v1"
#: Default largest map side: stride-32 features of images up to 4096 px (1333 px gives 42 cells).
#: The NaN padding compresses to almost nothing, so a generous bound costs little.
ATTENTION_MAX_SIDE = 128
