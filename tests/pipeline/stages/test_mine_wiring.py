"""Mining wiring: a staged shard equals region_priors / instance_priors applied by hand to the
checkpoint's encoder features and decoder outputs for the same images.

Disabling the IG filter in mine.py (t = 0) or handing it the background side of the map (-M)
changes the instance priors of this setup, which the test checks before comparing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from joindet.pipeline.model_loading import checkpoint_model
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan
from joindet.pipeline.stages import mine_shard
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.priors import BoxSet, eigen_attention, instance_priors, region_priors

from .stage_fixtures import copy_run, initialised_run, synthetic_root  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def _by_hand(run: RunDir, ids: np.ndarray) -> dict[str, list[BoxSet]]:
    cfg, p = run.config, run.config.priors
    model = checkpoint_model(cfg, run.checkpoint_path(1), torch.device("cpu"))
    batches = ImageBatches(run.dataset(), ids, cfg.model.test_size, cfg.model.max_size, cfg.mine.batch_size)
    out: dict[str, list[BoxSet]] = {"region": [], "instance": [], "no_filter": [], "background": []}
    with torch.inference_mode():
        for batch in batches:
            o = model(batch.images, batch.pad_mask)
            valid = o["enc_valid"]
            maps = eigen_attention(o["enc_features"], valid, tau=p.tau, eps=p.eps)
            b, boxes, scores = region_priors(
                maps, valid, connectivity=p.connectivity, min_cells=p.min_cells, max_boxes=p.max_region_boxes
            )
            out["region"].append(BoxSet.from_arrays(batch.image_ids[b], boxes, scores, "region"))
            for name, m, t in (
                ("instance", maps, p.instance_t),
                ("no_filter", maps, 0.0),
                ("background", -maps, p.instance_t),
            ):
                b, boxes, scores = instance_priors(
                    o["pred_logits"], o["pred_boxes"], m, valid, t=t, min_score=p.instance_min_score
                )
                out[name].append(BoxSet.from_arrays(batch.image_ids[b], boxes, scores, "instance"))
    return out


def test_a_staged_shard_equals_the_priors_computed_by_hand(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    ids = RunPlan(run).shards()[0]
    mine_shard(str(run.path), 2, 0)
    staged = {k: run.store.read_staged(2, k) for k in ("region", "instance")}
    hand = {k: BoxSet.concat(v) for k, v in _by_hand(run, ids).items()}
    # the mutations must be visible in this setup, or the comparison below proves nothing
    assert len(hand["instance"]) > 0
    assert len(hand["no_filter"]) > len(hand["instance"])
    assert not hand["background"].equals(hand["instance"].with_kind("instance"))
    for kind in ("region", "instance"):
        got, want = staged[kind], hand[kind].with_kind(kind)
        assert np.array_equal(got.image_ids, want.image_ids), kind
        assert np.allclose(got.boxes, want.boxes, atol=1e-6), kind
        assert np.allclose(got.scores, want.scores, atol=1e-6), kind
