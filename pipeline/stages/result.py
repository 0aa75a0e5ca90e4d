"""What a stage returns: whether it did work, and its headline figures.

``summary`` is plain JSON-able data (numbers, strings, lists, dicts) so the CLI can print it as
one screen and the flows can publish it as a Prefect artifact without knowing the stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StageResult:
    """Outcome of one stage call.

    Attributes:
        stage: the stage name (``init_priors``, ``mine``, ``smooth``, ``train``, ...).
        skipped: True when the output already existed and nothing was computed.
        summary: headline figures (boxes per image, images quarantined, seconds, ...).
    """

    stage: str
    skipped: bool
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ShardResult:
    """Outcome of mining one shard of one version.

    Attributes:
        version: the prior version mined (= the epoch at which it was mined).
        shard_id: index of the shard among ``RunDir.shards(num_shards)``.
        skipped: True when the shard was already staged with a valid checksum.
        num_images: images of the shard's range (including skipped/failed ones).
        counts: rows written per kind (``{"region": 123, "instance": 45}``); empty when skipped.
        failed: ``[(image_id, file, reason)]`` of images that could not be loaded.
        seconds: wall time of the shard (0 when skipped).
    """

    version: int
    shard_id: int
    skipped: bool
    num_images: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
