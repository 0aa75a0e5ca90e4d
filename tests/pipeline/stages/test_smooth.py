"""smooth: commits version n from staged shards + the previous version, per source and strategy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from joindet.pipeline.config import RunConfig
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.stages import mine, mine_shard, smooth
from joindet.priors import BoxSet, update_priors

from .stage_fixtures import copy_run, initialised_run, synthetic_root  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


@pytest.fixture(scope="module")
def mined_run(tmp_path_factory: pytest.TempPathFactory, initialised_run: RunDir) -> RunDir:  # noqa: F811
    """initialised_run with version 2 mined (not smoothed); read-only, tests copy it."""
    run = copy_run(initialised_run, tmp_path_factory.mktemp("mined") / "run")
    mine(run, 2)
    return run


def _expected(run: RunDir, kinds: tuple[str, ...], strategy: str) -> BoxSet:
    p = run.config.priors
    cur = BoxSet.concat([run.store.read_staged(2, k) for k in kinds])
    return update_priors(
        run.store.read(0, "smoothed"),
        cur,
        strategy,
        r0=run.store.read(0, "smoothed"),
        momentum=p.momentum,
        iou_thr=p.iou_thr,
        min_score=p.min_score,
        max_per_image=p.max_per_image,
    ).with_kind("smoothed")


def test_smooth_commits_box_smooth_of_region_and_instance(tmp_path: Path, mined_run: RunDir) -> None:
    run = copy_run(mined_run, tmp_path / "run")
    staged = {k: run.store.read_staged(2, k) for k in ("region", "instance")}
    result = smooth(run, 2)
    assert not result.skipped
    assert run.store.versions() == [0, 2]
    m = run.store.manifest(2)
    assert m.kinds == ["region", "instance", "smoothed"] and m.parent == 0
    assert m.config_digest == run.config.digest()
    assert m.checkpoint_digest == run.store.staged_shards(2)[0].meta["checkpoint_digest"]
    assert {"matched", "added", "removed", "mean_iou"} <= set(m.stats["churn"])
    assert m.stats["source"] == "region+instance" and m.stats["update"] == "box_smooth"
    for kind, boxes in staged.items():
        assert run.store.read(2, kind).equals(boxes.with_kind(kind))
    smoothed = run.store.read(2, "smoothed")
    assert len(smoothed) > 0
    assert smoothed.equals(_expected(run, ("region", "instance"), "box_smooth"))
    assert result.summary["boxes"]["smoothed"] == len(smoothed) and result.summary["parent"] == 0

    assert smooth(run, 2).skipped
    forced = smooth(run, 2, force=True)
    assert not forced.skipped and run.store.read(2, "smoothed").equals(smoothed)
    assert len(list((run.path / "priors" / "_replaced").iterdir())) == 1


@pytest.mark.parametrize(
    ("source", "strategy", "kinds"),
    [
        ("region", "direct", ("region",)),
        ("instance", "nms", ("instance",)),
        ("region+instance", "fixed", ("region", "instance")),
    ],
)
def test_source_and_update_strategy_follow_the_config(
    tmp_path: Path, mined_run: RunDir, source: str, strategy: str, kinds: tuple[str, ...]
) -> None:
    run = _rewrite_priors(copy_run(mined_run, tmp_path / "run"), source=source, update=strategy)
    smooth(run, 2)
    assert run.store.read(2, "smoothed").equals(_expected(run, kinds, strategy))
    committed = set(run.store.manifest(2).kinds)
    assert set(kinds) <= committed
    if strategy == "fixed":
        assert run.store.read(2, "smoothed").equals(
            update_priors(
                BoxSet.empty(),
                BoxSet.empty(),
                "fixed",
                r0=run.store.read(0, "smoothed"),
                max_per_image=run.config.priors.max_per_image,
                min_score=run.config.priors.min_score,
            )
        )


def test_missing_shards_or_parent_are_refused(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    with pytest.raises(ValueError, match="2 of 2 shards not mined"):
        smooth(run, 2)
    mine(run, 2, shard_ids=[0])
    with pytest.raises(ValueError, match="1 of 2 shards not mined .*shard 1"):
        smooth(run, 2)
    assert not run.store.has_version(2)
    shutil.rmtree(run.path / "priors" / "v0000")
    mine(run, 2, shard_ids=[1])
    with pytest.raises(ValueError, match="needs an earlier committed version"):
        smooth(run, 2)


def test_failures_of_workers_are_quarantined_at_smooth(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    ds = run.dataset()
    data = tmp_path / "data"
    shutil.copytree(ds.root, data)
    broken = int(run.image_ids()[2])
    (data / ds.file(broken)).write_bytes(b"")
    info = json.loads((run.path / "run.json").read_text())
    info["dataset"]["root"] = str(data)
    (run.path / "run.json").write_text(json.dumps(info))
    # Workers (e.g. on Dask) run mine_shard only: they do not touch the quarantine table.
    for shard in (0, 1):
        assert mine_shard(str(run.path), 2, shard).failed == (
            [(broken, ds.file(broken), "empty file (0 bytes)")] if shard == 0 else []
        )
    assert run.quarantine().num_rows == 0
    smooth(run, 2)
    assert run.quarantined_ids() == {broken}
    assert run.store.manifest(2).stats["quarantined"] == 1


def _rewrite_priors(run: RunDir, **changes: object) -> RunDir:
    info = json.loads((run.path / "run.json").read_text())
    info["config"]["priors"].update(changes)
    info["config_digest"] = RunConfig.from_dict(info["config"]).digest()
    (run.path / "run.json").write_text(json.dumps(info))
    return RunDir.open(run.path)


def test_shards_left_by_a_larger_shard_count_are_refused(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = _rewrite_mine(copy_run(initialised_run, tmp_path / "run"), shards=3)
    mine(run, 2)
    run = _rewrite_mine(run, shards=2)
    mine(run, 2)
    with pytest.raises(ValueError, match=r"staged shards \[2\] .* mine.shards=2"):
        smooth(run, 2)


def _rewrite_mine(run: RunDir, **changes: object) -> RunDir:
    info = json.loads((run.path / "run.json").read_text())
    info["config"]["mine"].update(changes)
    (run.path / "run.json").write_text(json.dumps(info))
    return RunDir.open(run.path)


def test_update_in_chunks_equals_one_call_on_any_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 images, on 1 or 3 threads, give the boxes and scores of one Box Smooth call."""
    import importlib

    import numpy as np

    smooth_stage = importlib.import_module("joindet.pipeline.stages.smooth")  # the package exports the function

    rng = np.random.default_rng(2)

    def boxes(n: int, kind: str) -> BoxSet:
        lo = rng.random((n, 2)) * 0.6
        return BoxSet.from_arrays(
            rng.integers(0, 60, n), np.concatenate([lo, lo + 0.05 + rng.random((n, 2)) * 0.3], 1), rng.random(n), kind
        )

    prev, cur = boxes(900, "smoothed"), boxes(1100, "region")
    whole = update_priors(prev, cur, "box_smooth", max_per_image=20)
    monkeypatch.setattr(smooth_stage, "UPDATE_CHUNK_IMAGES", 7)
    for threads in (1, 3):
        got = smooth_stage.update_in_chunks(prev, cur, "box_smooth", threads=threads, max_per_image=20)
        np.testing.assert_array_equal(got.image_ids, whole.image_ids)
        np.testing.assert_array_equal(got.boxes, whole.boxes)
        np.testing.assert_array_equal(got.scores, whole.scores)
