"""Box Smooth vs ensemble-boxes WBF run per image, same inputs, same run; prints one JSON line.

Inputs: N images x (30 previous + 30 current boxes); each current box is, with probability 0.7,
a jittered copy of a previous box (realistic overlap between rounds), else a fresh random box.
Usage: python benchmarks/bench_smooth.py [--images 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
from ensemble_boxes import weighted_boxes_fusion

from joindet.priors import BoxSet, box_smooth
from joindet.priors.smooth import MOMENTUM


def make_inputs(n_images: int, per_image: int, seed: int = 0) -> tuple[BoxSet, BoxSet]:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(0.1, 0.9, (n_images, per_image, 2))
    size = rng.uniform(0.05, 0.4, (n_images, per_image, 2))
    prev = np.concatenate([centre - size / 2, centre + size / 2], -1)
    fresh_c = rng.uniform(0.1, 0.9, (n_images, per_image, 2))
    fresh_s = rng.uniform(0.05, 0.4, (n_images, per_image, 2))
    fresh = np.concatenate([fresh_c - fresh_s / 2, fresh_c + fresh_s / 2], -1)
    jitter = prev + rng.normal(0, 0.015, prev.shape)
    jitter = np.concatenate(
        [np.minimum(jitter[..., :2], jitter[..., 2:]), np.maximum(jitter[..., :2], jitter[..., 2:])], -1
    )
    cur = np.where(rng.uniform(size=(n_images, per_image, 1)) < 0.7, jitter, fresh)
    ids = np.repeat(np.arange(n_images), per_image)
    return (
        BoxSet.from_arrays(ids, np.clip(prev, 0, 1).reshape(-1, 4), rng.uniform(0.1, 1, ids.size)),
        BoxSet.from_arrays(ids, np.clip(cur, 0, 1).reshape(-1, 4), rng.uniform(0.1, 1, ids.size), "region"),
    )


def _reference(prev: BoxSet, cur: BoxSet, images: range, m: float, thr: float) -> list[np.ndarray]:
    """ensemble-boxes WBF run image by image over ``images`` (fused boxes float64 [K, 4] each)."""
    po, co = prev.offsets(np.arange(images.stop)), cur.offsets(np.arange(images.stop))
    refs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in images:
            p, c = slice(po[i], po[i + 1]), slice(co[i], co[i + 1])
            b, _, _ = weighted_boxes_fusion(
                [prev.boxes[p], cur.boxes[c]],
                [prev.scores[p], cur.scores[c]],
                [np.zeros(po[i + 1] - po[i]), np.zeros(co[i + 1] - co[i])],
                weights=[m, 1 - m],
                iou_thr=thr,
                skip_box_thr=0.0,
            )
            refs.append(b)
    return refs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--per-image", type=int, default=30)
    parser.add_argument("--momentum", type=float, default=MOMENTUM)
    parser.add_argument("--iou-thr", type=float, default=0.55)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    prev, cur = make_inputs(args.images, args.per_image)
    m, thr = args.momentum, args.iou_thr
    box_smooth(prev, cur, momentum=m, iou_thr=thr)  # warm-up (page faults, caches)

    # The CPU is shared, so the two sides are interleaved: every round times box_smooth on all
    # images and ensemble-boxes on the next 1/rounds of them, and the ratio is taken per image
    # within the round; the median over rounds is the figure, min/max show the noise.
    ours_times, ratios, cpu_ratios, refs = [], [], [], []
    bounds = np.linspace(0, args.images, args.rounds + 1).astype(int)
    for r in range(args.rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        ours = box_smooth(prev, cur, momentum=m, iou_thr=thr)
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        refs += _reference(prev, cur, range(bounds[r], bounds[r + 1]), m, thr)
        scale = args.images / (bounds[r + 1] - bounds[r])
        t_ref, c_ref = (time.perf_counter() - t0) * scale, (time.process_time() - c0) * scale
        ours_times.append(t_ours)
        ratios.append(t_ref / t_ours)
        cpu_ratios.append(c_ref / c_ours)

    worst, mismatched = 0.0, 0
    oo = ours.offsets(np.arange(args.images))
    for i, ref in enumerate(refs):
        mine = ours.boxes[oo[i] : oo[i + 1]].astype(np.float64)
        if mine.shape != ref.shape:
            mismatched += 1
            continue
        a = mine[np.lexsort(mine.T[::-1])]
        r = ref[np.lexsort(ref.T[::-1])]
        worst = max(worst, float(np.abs(a - r).max()) if len(a) else 0.0)
    print(
        json.dumps(
            {
                "bench": "box_smooth",
                "images": args.images,
                "boxes_per_image": 2 * args.per_image,
                "rounds": args.rounds,
                "box_smooth_s_median": round(float(np.median(ours_times)), 4),
                "ensemble_boxes_s_all_images": round(float(np.median([t * r for t, r in zip(ours_times, ratios)])), 3),
                "speedup_median": round(float(np.median(ratios)), 1),
                "speedup_min": round(min(ratios), 1),
                "speedup_max": round(max(ratios), 1),
                "cpu_time_speedup_median": round(float(np.median(cpu_ratios)), 1),
                "images_with_different_box_count": mismatched,
                "max_abs_coord_diff": worst,
                "load_avg_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
