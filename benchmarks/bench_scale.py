"""COCO-scale per-version steps: shard bookkeeping, smooth stage, prior evaluation; one JSON line.

Builds a run directory from a seeded generator (no model, no images): a COCO-format ground truth
of ``--images`` images (118,287 by default, COCO train2017; about 7.3 boxes per image, 1% crowd),
the parent version v0000 (``--boxes`` smoothed boxes per image, some near the ground truth) and
version v0010 staged in ``--shards`` mining shards (``--boxes`` region + instance boxes per image,
70% of them jittered copies of the parent's). A second run directory holds the same staged boxes
in ``--plan-shards`` shards (512) for the bookkeeping figure.

Each step runs in a fresh child process (so ``peak_rss_mb`` is that step's own peak, imports
included) and is timed around the call alone, in wall-clock seconds and in CPU seconds
(``*_cpu_s``, all threads; less sensitive to other jobs on a shared machine; ``*_child_cpu_s``
counts the child's imports too):

- ``plan_s``: ``RunPlan.missing_shards`` of the 512-shard version (markers read once) plus every
  mining task's own check (``RunPlan.shard_done``, one marker each) summed in ``shard_checks_s``;
- ``smooth_stage_s``: ``pipeline.stages.smooth`` (read parent and shards, Box Smooth, churn,
  statistics, write, commit with checksums);
- ``evaluate_s``: ``pipeline.stages.evaluate_priors`` of v0010 on the default sample
  (``eval.sample_images``), ground-truth JSON parsing included.

``files_per_version``: files of ``priors/v0010/`` plus those of ``attention/v0010.zarr`` if present.

    python3 benchmarks/bench_scale.py [--images 118287 --boxes 100 --shards 64 --dir /tmp/x]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VERSION = 10
#: Average ground-truth boxes per COCO train2017 image (860,001 / 118,287).
GT_PER_IMAGE = 7.27


def _random_boxes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Normalised xyxy float64 [*shape, 4]: uniform centres, log-uniform sides 3%-70% of the image."""
    centre = rng.random((*shape, 2))
    side = np.exp(rng.uniform(np.log(0.03), np.log(0.7), (*shape, 2)))
    return np.clip(np.concatenate([centre - side / 2, centre + side / 2], -1), 0.0, 1.0)


def _jitter(rng: np.random.Generator, boxes: np.ndarray, sd: float) -> np.ndarray:
    """Boxes moved by normal noise of ``sd`` x their size per coordinate, still valid, in [0, 1]."""
    wh = np.concatenate([boxes[..., 2:] - boxes[..., :2]] * 2, -1)
    out = np.clip(boxes + rng.normal(0.0, sd, boxes.shape) * wh, 0.0, 1.0)
    lo, hi = np.minimum(out[..., :2], out[..., 2:]), np.maximum(out[..., :2], out[..., 2:])
    hi = np.maximum(hi, np.minimum(lo + 1e-3, 1.0))
    lo = np.minimum(lo, hi - 1e-3)
    return np.concatenate([lo, hi], -1)


def build(root: Path, n_images: int, per_image: int, shards: int, plan_shards: int, seed: int) -> dict:
    """Write the ground truth, the run (v0000 committed, v0010 staged) and the 512-shard run."""
    from joindet.pipeline.config import make_config
    from joindet.pipeline.data import open_dataset
    from joindet.pipeline.run_dir import RunDir
    from joindet.pipeline.schedule import shard_ranges
    from joindet.priors import BoxSet

    rng = np.random.default_rng(seed)
    ids = np.arange(1, n_images + 1, dtype=np.int64)
    width = rng.integers(320, 641, n_images)
    height = rng.integers(240, 481, n_images)
    n_gt = np.minimum(rng.poisson(GT_PER_IMAGE, n_images), per_image)
    gt_img = np.repeat(np.arange(n_images), n_gt)
    gt = _random_boxes(rng, (len(gt_img),))
    gw, gh = width[gt_img], height[gt_img]
    px = np.stack([gt[:, 0] * gw, gt[:, 1] * gh, (gt[:, 2] - gt[:, 0]) * gw, (gt[:, 3] - gt[:, 1]) * gh], 1)
    px = np.round(px, 2)
    crowd = rng.random(len(gt_img)) < 0.01
    coco = {
        "images": [
            {"id": int(i), "file_name": f"{i:012d}.jpg", "width": int(w), "height": int(h)}
            for i, w, h in zip(ids, width, height)
        ],
        "annotations": [
            {
                "id": k + 1,
                "image_id": int(ids[m]),
                "category_id": 1,
                "bbox": b,
                "area": round(b[2] * b[3], 2),
                "iscrowd": int(c),
            }
            for k, (m, b, c) in enumerate(zip(gt_img.tolist(), px.tolist(), crowd.tolist()))
        ],
        "categories": [{"id": 1, "name": "object"}],
    }
    (root / "images").mkdir(parents=True, exist_ok=True)
    ann = root / "annotations.json"
    ann.write_text(json.dumps(coco))
    del coco

    # Parent: the first n_gt slots of an image are jittered ground truth, the rest random.
    parent = _random_boxes(rng, (n_images, per_image))
    slot = np.arange(per_image)[None, :]
    near = slot < n_gt[:, None]
    first_gt = np.cumsum(n_gt) - n_gt
    gt_of = np.minimum(first_gt[:, None] + slot, max(len(gt) - 1, 0))
    parent[near] = _jitter(rng, gt[gt_of[near]], 0.05)
    p_scores = np.where(near, rng.uniform(0.3, 1.0, near.shape), rng.uniform(0.05, 0.6, near.shape))
    # Current: 70% jittered copies of the parent's boxes, 30% new; half region, half instance.
    cur = np.where(rng.random((n_images, per_image, 1)) < 0.7, _jitter(rng, parent, 0.08), parent * 0)
    fresh = (cur == 0).all(-1)
    cur[fresh] = _random_boxes(rng, (int(fresh.sum()),))
    c_scores = rng.uniform(0.05, 1.0, (n_images, per_image))
    kinds = np.where(rng.random(n_images * per_image) < 0.5, "region", "instance")
    rows = np.repeat(ids, per_image)
    parent_bs = BoxSet.from_arrays(rows, parent.reshape(-1, 4), p_scores.reshape(-1), "smoothed", assume_sorted=True)
    cur_bs = BoxSet.from_arrays(rows, cur.reshape(-1, 4), c_scores.reshape(-1), kinds, assume_sorted=True)
    del parent, cur

    out = {}
    for name, num_shards in (("run", shards), ("plan", plan_shards)):
        cfg = make_config(
            "tiny",
            "coco-json",
            [
                f"data.annotations={ann}",
                f"data.root={root / 'images'}",
                "schedule.epochs=20",
                "schedule.update_every=10",
                f"mine.shards={num_shards}",
                "mine.save_attention=false",
                f"priors.max_per_image={per_image}",
            ],
        )
        ds = open_dataset("coco-json", root=root / "images", annotations=ann)
        run = RunDir.create(root / name, cfg, dataset=ds)
        if name == "run":
            run.store.commit(0, {"region": parent_bs.with_kind("region"), "smoothed": parent_bs})
        batch_size = run.config.mine.batch_size
        for s, shard_ids in enumerate(shard_ranges(run.image_ids(), num_shards, batch_size)):
            # a shard past the last batch is empty (more shards than batches)
            first, last = (int(shard_ids[0]), int(shard_ids[-1])) if len(shard_ids) else (None, None)
            lo, hi = np.searchsorted(cur_bs.image_ids, [first, last + 1]) if len(shard_ids) else (0, 0)
            part = BoxSet(cur_bs.image_ids[lo:hi], cur_bs.boxes[lo:hi], cur_bs.scores[lo:hi], cur_bs.kinds[lo:hi])
            meta = {
                "first_image_id": first,
                "last_image_id": last,
                "num_images": len(shard_ids),
                "source": "region+instance",
                "batch_size": batch_size,
                "failed": [],
            }
            run.store.write_shard(VERSION, s, {k: part.of_kind(k) for k in ("region", "instance")}, meta=meta)
        out[name] = str(run.path)
    out["ground_truth_boxes"] = len(gt_img)
    return out


# ---------------------------------------------------------------------- steps (child processes)
def step_plan(run_path: str) -> dict:
    from joindet.pipeline.run_dir import RunDir
    from joindet.pipeline.schedule import RunPlan

    run = RunDir.open(run_path)
    t, cpu = time.perf_counter(), time.process_time()
    plan = RunPlan(run)
    missing = plan.missing_shards(VERSION)
    plan_s, plan_cpu = time.perf_counter() - t, time.process_time() - cpu
    t = time.perf_counter()
    done = sum(RunPlan(run).shard_done(VERSION, s) for s in range(run.config.mine.shards))
    checks_s = time.perf_counter() - t
    assert not missing and done == run.config.mine.shards, (missing, done)
    return {"plan_s": plan_s, "plan_cpu_s": plan_cpu, "shard_checks_s": checks_s, "plan_shards": run.config.mine.shards}


def step_smooth(run_path: str) -> dict:
    from joindet.pipeline.run_dir import RunDir
    from joindet.pipeline.stages import smooth

    run = RunDir.open(run_path)
    t, cpu = time.perf_counter(), time.process_time()
    result = smooth(run, VERSION)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    assert not result.skipped
    return {"smooth_stage_s": seconds, "smooth_stage_cpu_s": cpu, "smoothed_boxes": result.summary["boxes"]["smoothed"]}


def step_evaluate(run_path: str) -> dict:
    from joindet.pipeline.run_dir import RunDir
    from joindet.pipeline.stages import evaluate_priors

    run = RunDir.open(run_path)
    t, cpu = time.perf_counter(), time.process_time()
    metrics = evaluate_priors(run, versions=[VERSION])
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"evaluate_s": seconds, "evaluate_cpu_s": cpu, "metrics": metrics[f"v{VERSION:04d}"]["smoothed"]}


STEPS = {"plan": step_plan, "smooth": step_smooth, "evaluate": step_evaluate}


def run_child(step: str, run_path: str) -> dict:
    """Run one step in a fresh interpreter; its JSON result plus its peak RSS (MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(
        [sys.executable, __file__, "--step", step, "--run", run_path],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of its own address space (``ru_maxrss`` would also count the
    parent's peak at fork, inherited across exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _files(path: Path) -> int:
    return sum(1 for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--boxes", type=int, default=100, help="boxes per image of the parent and of the staged shards")
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--plan-shards", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        out = STEPS[args.step](args.run)
        out["cpu_s"] = time.process_time()  # the whole child, imports included
        out["peak_rss_mb"] = _peak_rss_mb()
        print(json.dumps(out))
        return

    t0 = time.perf_counter()
    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty; pass a new --dir")
    try:
        t = time.perf_counter()
        built = build(work, args.images, args.boxes, args.shards, args.plan_shards, args.seed)
        build_s = time.perf_counter() - t
        plan = run_child("plan", built["plan"])
        sm = run_child("smooth", built["run"])
        ev = run_child("evaluate", built["run"])
        run = Path(built["run"])
        files = _files(run / "priors" / f"v{VERSION:04d}") + _files(run / "attention" / f"v{VERSION:04d}.zarr")
        sample = json.loads((run / "metrics" / "priors.json").read_text())["sample"]
        peak = max(plan["peak_rss_mb"], sm["peak_rss_mb"], ev["peak_rss_mb"])
        result = {
            "images": args.images,
            "boxes_per_image": args.boxes,
            "ground_truth_boxes": built["ground_truth_boxes"],
            "shards": args.shards,
            "plan_shards": plan["plan_shards"],
            "plan_s": round(plan["plan_s"], 3),
            "plan_cpu_s": round(plan["plan_cpu_s"], 3),
            "shard_checks_s": round(plan["shard_checks_s"], 3),
            "smooth_stage_s": round(sm["smooth_stage_s"], 2),
            "smooth_stage_cpu_s": round(sm["smooth_stage_cpu_s"], 2),
            "smooth_child_cpu_s": round(sm["cpu_s"], 2),
            "smoothed_boxes": sm["smoothed_boxes"],
            "evaluate_s": round(ev["evaluate_s"], 2),
            "evaluate_cpu_s": round(ev["evaluate_cpu_s"], 2),
            "evaluate_child_cpu_s": round(ev["cpu_s"], 2),
            "evaluated_images": sample["scored_images"][f"v{VERSION:04d}"],
            "metrics": ev["metrics"],
            "peak_rss_mb": round(peak, 1),
            "peak_rss_mb_per_step": {
                "plan": round(plan["peak_rss_mb"], 1),
                "smooth": round(sm["peak_rss_mb"], 1),
                "evaluate": round(ev["peak_rss_mb"], 1),
            },
            "files_per_version": files,
            "build_s": round(build_s, 1),
            "total_s": round(time.perf_counter() - t0, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
        }
        result["targets_met"] = {
            "plan_lt_1s": result["plan_s"] < 1.0,
            "smooth_stage_le_60s": result["smooth_stage_s"] <= 60,
            "evaluate_le_60s": result["evaluate_s"] <= 60,
            "peak_rss_le_4096mb": result["peak_rss_mb"] <= 4096,
            "total_lt_600s": result["total_s"] < 600,
        }
        print(json.dumps(result))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
