"""mine / mine_shard: staged shards, no second work, SIGKILL + resume bit-identical, sources, errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from joindet.pipeline.progress import RecordingProgress
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan, shard_ranges
from joindet.pipeline.stages import mine, mine_shard, smooth
from joindet.pipeline.stages.mine import shard_failures
from joindet.priors import BoxSet
from joindet.priors.store.attention_maps import AttentionStore

from .stage_fixtures import (  # noqa: F401
    NUM_IMAGES,
    copy_run,
    initialised_run,
    new_run,
    synthetic_root,
    tiny_config,
    write_checkpoint,
)
from .stage_fixtures import rewrite_config as _rewrite

pytestmark = pytest.mark.filterwarnings("ignore:DetectorConfig.backbone_weights is not set")


def _staged(run: RunDir, version: int) -> dict[str, BoxSet]:
    return {k: run.store.read_staged(version, k) for k in ("region", "instance")}


def test_mine_stages_every_shard_with_region_and_instance_priors(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    progress = RecordingProgress()
    result = mine(run, 2, progress=progress)
    assert not result.skipped and result.summary["shards_mined"] == [0, 1]
    assert result.summary["images"] == NUM_IMAGES
    assert run.store.done_shards(2) == {0, 1} and not run.store.has_version(2)
    staged = _staged(run, 2)
    assert len(staged["region"]) > 0 and len(staged["instance"]) > 0
    assert result.summary["boxes"] == {k: len(v) for k, v in staged.items()}
    for kind, boxes in staged.items():
        assert set(boxes.kind_names()) == {kind}
        assert np.isin(boxes.image_ids, run.image_ids()).all()
        assert (boxes.boxes >= 0).all() and (boxes.boxes <= 1).all()
    shards = shard_ranges(run.image_ids(), 2, run.config.mine.batch_size)
    markers = run.store.staged_shards(2)
    digest = markers[0].meta["checkpoint_digest"]
    assert digest.startswith("sha256:") and markers[1].meta["checkpoint_digest"] == digest
    for s, ids in enumerate(shards):
        assert (markers[s].meta["first_image_id"], markers[s].meta["last_image_id"]) == (int(ids[0]), int(ids[-1]))
        shard_ids = np.unique(np.concatenate([staged[k].image_ids for k in staged]))
        assert np.isin(shard_ids, run.image_ids()).all()
    starts = [e[1] for e in progress.events if e[0] == "start"]
    assert starts == [("mine v0002 shard 0", len(shards[0])), ("mine v0002 shard 1", len(shards[1]))]


def test_calling_mine_twice_does_no_second_work(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    mine(run, 2)
    stage = run.path / "priors" / "_staging" / "v0002" / "mine"
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in stage.iterdir()}
    progress = RecordingProgress()
    again = mine(run, 2, progress=progress)
    assert again.skipped and again.summary["shards_done"] == 2
    assert mine_shard(str(run.path), 2, 1).skipped
    assert progress.events == []
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in stage.iterdir()} == before
    smooth(run, 2)
    assert mine(run, 2).summary == {"version": 2, "committed": True}


_CHILD = textwrap.dedent(
    """
    import sys, time
    from joindet.pipeline.progress import NullProgress
    from joindet.pipeline.run_dir import RunDir
    from joindet.pipeline.stages import mine

    class StallOnSecondShard(NullProgress):
        def start(self, task, total, unit="img"):
            if task.endswith("shard 1"):
                print("mining shard 1", flush=True)
                time.sleep(120)

    mine(RunDir.open(sys.argv[1]), 2, progress=StallOnSecondShard())
    """
)


def test_sigkill_during_mine_then_resume_redoes_only_missing_shards(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    killed = copy_run(initialised_run, tmp_path / "killed")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(killed.path)], stdout=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "mining shard 1", "the child died before reaching shard 1"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert killed.store.done_shards(2) == {0}
    assert not killed.store.has_version(2)

    resumed = mine(killed, 2)  # takes over the dead writer's lock
    assert resumed.summary["shards_mined"] == [1]
    smooth(killed, 2)

    clean = copy_run(initialised_run, tmp_path / "clean")
    mine(clean, 2)
    smooth(clean, 2)
    for kind in ("region", "instance", "smoothed"):
        assert killed.store.read(2, kind).equals(clean.store.read(2, kind)), kind


def test_quarantined_and_unreadable_images_are_skipped(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    ids = run.image_ids()
    run.add_quarantine([(int(ids[0]), "x.jpg", "known bad")])
    ds = run.dataset()
    # Make the dataset's copy of one image unreadable: point the run at a copy of the data.
    data = tmp_path / "data"
    shutil.copytree(ds.root, data)
    (data / ds.file(int(ids[-1]))).write_bytes(b"not an image")
    run = _rewrite(run, "dataset", root=str(data))
    result = mine(run, 2)
    assert result.summary["quarantined"] == 1
    staged = _staged(run, 2)
    for boxes in staged.values():
        assert not np.isin([ids[0], ids[-1]], boxes.image_ids).any()
    assert [f[0] for f in shard_failures(run, 2)] == [int(ids[-1])]
    assert run.quarantined_ids() == {int(ids[0]), int(ids[-1])}


def test_attention_maps_are_saved_per_image(tmp_path: Path, synthetic_root: Path) -> None:  # noqa: F811
    run = new_run(tmp_path / "run", synthetic_root, tiny_config("mine.save_attention=true", "priors.source=region"))
    write_checkpoint(run, 1)
    result = mine(run, 2)
    assert set(result.summary["boxes"]) == {"region"}
    maps = AttentionStore(run.path)
    assert maps.versions() == [2]
    for image_id in run.image_ids():
        m = maps.read(2, int(image_id))
        assert m is not None and m.shape == (16, 16) and np.isfinite(m).all()
        assert (m > 0).any(), "the foreground side of an eigen attention map is positive"


def test_region0_and_random_crops_need_no_checkpoint(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    r0 = copy_run(initialised_run, tmp_path / "r0")
    r0 = _rewrite(r0, "priors", source="region0")
    (r0.checkpoint_path(1)).unlink()
    mine(r0, 2)
    assert r0.store.read_staged(2, "region").equals(r0.store.read(0, "region"))

    crops = copy_run(initialised_run, tmp_path / "crops")
    crops = _rewrite(crops, "priors", source="random_crops", random_crops=5)
    mine(crops, 2)
    staged = crops.store.read_staged(2, "region")
    assert len(staged) == 5 * NUM_IMAGES
    assert np.array_equal(np.unique(staged.image_ids), crops.image_ids())


def test_predictions_source_keeps_every_foreground_prediction(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    ig = copy_run(initialised_run, tmp_path / "ig")
    mine(ig, 2)
    preds = copy_run(initialised_run, tmp_path / "preds")
    preds = _rewrite(preds, "priors", source="predictions")
    mine(preds, 2)
    filtered, every = ig.store.read_staged(2, "instance"), preds.store.read_staged(2, "instance")
    assert len(every) >= len(filtered) and len(preds.store.read_staged(2, "region")) == 0
    rows = {(int(i), *b.tolist()) for i, b in zip(every.image_ids, every.boxes)}
    assert all((int(i), *b.tolist()) in rows for i, b in zip(filtered.image_ids, filtered.boxes))


def test_bad_requests_are_refused_clearly(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    with pytest.raises(ValueError, match="version 0 is R_0"):
        mine(run, 0)
    with pytest.raises(FileNotFoundError, match="epoch-0003.pt"):
        mine(run, 4)
    with pytest.raises(ValueError, match="has 2 shards"):
        mine(run, 2, shard_ids=[2])
    with pytest.raises(ValueError, match="has 2 shards"):
        mine_shard(str(run.path), 2, 5)
    assert run.store.done_shards(2) == set()
    assert mine(run, 2, shard_ids=[1]).summary["shards_mined"] == [1]
    assert run.store.done_shards(2) == {1}


def test_shards_mined_on_threads_match_and_torch_settings_are_restored(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    sequential = copy_run(initialised_run, tmp_path / "seq")
    mine(sequential, 2)
    threaded = _rewrite(copy_run(initialised_run, tmp_path / "threads"), "mine", save_attention=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda s: mine_shard(str(threaded.path), 2, s), [0, 1]))
    assert [r.skipped for r in results] == [False, False]
    for kind in ("region", "instance"):
        assert threaded.store.read_staged(2, kind).equals(sequential.store.read_staged(2, kind))
    maps = AttentionStore(threaded.path)
    assert all(maps.read(2, int(i)) is not None for i in threaded.image_ids())
    assert not torch.are_deterministic_algorithms_enabled()


def test_shards_staged_under_another_shard_count_are_reused_only_for_the_same_range(
    tmp_path: Path,
    initialised_run: RunDir,  # noqa: F811
) -> None:
    run = _rewrite(copy_run(initialised_run, tmp_path / "run"), "mine", batch_size=2)  # 4 batches of 2
    mine(run, 2, shard_ids=[0, 1])  # 2 shards: images 0-3 and 4-7
    run = _rewrite(run, "mine", shards=3)  # resume-safe: same config digest
    assert RunPlan(run).done_shards(2) == {0}  # 3 shards: images 0-3 (the same batches), 4-5, 6-7
    result = mine(run, 2)
    assert result.summary["shards_mined"] == [1, 2]
    assert RunPlan(run).done_shards(2) == {0, 1, 2}
    clean = _rewrite(copy_run(initialised_run, tmp_path / "clean"), "mine", shards=1, batch_size=2)
    mine(clean, 2)
    for kind in ("region", "instance"):  # one shard or a mix of two plans: the same boxes
        assert run.store.read_staged(2, kind).equals(clean.store.read_staged(2, kind))


def test_done_work_needs_no_checkpoint(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    mine(run, 2)
    run.checkpoint_path(1).unlink()  # e.g. old checkpoints pruned after mining
    assert mine(run, 2).skipped and mine_shard(str(run.path), 2, 0).skipped
    smooth(run, 2)
    assert mine(run, 2).skipped


def test_selective_search_without_ximgproc_says_how_to_repair_opencv(
    tmp_path: Path,
    initialised_run: RunDir,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the cv2 of opencv-python(-headless) installed over the contrib wheel has no ximgproc
    monkeypatch.delattr(__import__("cv2"), "ximgproc")
    run = _rewrite(copy_run(initialised_run, tmp_path / "run"), "priors", source="selective_search")
    with pytest.raises(ImportError, match=r"pip install opencv-contrib-python-headless"):
        mine(run, 2)
    assert run.store.done_shards(2) == set()


def test_shards_mined_by_a_replaced_checkpoint_are_mined_again(tmp_path: Path, initialised_run: RunDir) -> None:  # noqa: F811
    run = copy_run(initialised_run, tmp_path / "run")
    mine(run, 2, shard_ids=[0])
    assert RunPlan(run).done_shards(2) == {0}
    write_checkpoint(run, 1, seed=7)  # epoch 1 retrained: a different model mines v2
    assert RunPlan(run).done_shards(2) == set()
    result = mine(run, 2)
    assert result.summary["shards_mined"] == [0, 1]
    markers = run.store.staged_shards(2)
    assert len({m.meta["checkpoint_digest"] for m in markers.values()}) == 1


def test_attention_maps_one_file_per_mining_shard_and_a_new_plan_replaces_them(
    tmp_path: Path,
    initialised_run: RunDir,  # noqa: F811
) -> None:
    run = _rewrite(copy_run(initialised_run, tmp_path / "run"), "mine", save_attention=True)
    mine(run, 2, shard_ids=[0])
    store = AttentionStore(run.path)
    files = lambda: sorted(p for p in (store.path(2) / "maps" / "c").rglob("*") if p.is_file())  # noqa: E731
    assert len(files()) == 1  # shard 0's maps, in one file; shard 1 not mined yet
    first = store.maps(2)
    ids = run.image_ids()
    assert first.read(int(ids[0])) is not None and first.read(int(ids[-1])) is None
    mine(run, 2)
    assert len(files()) == 2
    # 3 shards of batches of 2: images 0-3, 4-5, 6-7; staged shards and maps of the old plan are stale
    run = _rewrite(run, "mine", shards=3, batch_size=2)
    mine(run, 2)
    assert len(files()) == 3 and store.maps(2).rows_per_file == 4
    clean = _rewrite(copy_run(initialised_run, tmp_path / "clean"), "mine", save_attention=True, shards=3, batch_size=2)
    mine(clean, 2)
    for image_id in ids.tolist():
        np.testing.assert_array_equal(store.read(2, image_id), AttentionStore(clean.path).read(2, image_id))


def test_attention_map_side_bounds_the_mined_level() -> None:
    from joindet.detector import get_preset
    from joindet.pipeline.stages.mine import attention_map_side

    assert attention_map_side(tiny_config().model) == 16  # 128 px, stride 8 (the test maps are 16 x 16)
    assert attention_map_side(get_preset("tiny")) == 24  # 192 px, stride 8
    assert attention_map_side(get_preset("paper")) == 42  # 1333 -> 1344 px, C5 (stride 32) of 4 levels
    assert attention_map_side(get_preset("paper-single-scale")) == 42  # C5, stride 32
