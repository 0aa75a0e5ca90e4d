"""Benchmark of the prior store against one COCO results JSON, at COCO scale.

A version of ``--images`` images x ``--boxes`` boxes (default 118,287 x 50, COCO train2017) is
committed (write), read whole into a BoxSet (read, with the sha256 check a real read does),
and looked up per image (median latency over ``--lookups`` random images). The same boxes as a
COCO results JSON (the list ``export_coco_results`` makes) are written with ``json.dump`` and
read with ``json.load``. Both sides are timed alike: ``--repeats`` writes and reads each,
interleaved, the median of each (a page-cached file on both sides). Prints one JSON line with
the figures and the ratios.

    python3 benchmarks/bench_store.py [--images 118287 --boxes 50 --repeats 3 --dir /tmp/x]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from joindet.priors import BoxSet, PriorStore, write_images_table
from joindet.priors.coco_io import export_coco_results


def make_boxes(n_images: int, per_image: int, seed: int = 0) -> tuple[BoxSet, pa.Table]:
    """Random boxes (normalised xyxy) and an images table of 640 x 480 images."""
    rng = np.random.default_rng(seed)
    n = n_images * per_image
    xy = rng.random((n, 2), dtype=np.float32) * 0.7
    wh = rng.random((n, 2), dtype=np.float32) * 0.3
    ids = np.repeat(np.arange(n_images, dtype=np.int64), per_image)
    bs = BoxSet.from_arrays(
        ids, np.concatenate([xy, xy + wh], 1), rng.random(n, dtype=np.float32), "smoothed", assume_sorted=True
    )
    images = pa.table(
        {
            "image_id": np.arange(n_images, dtype=np.int64),
            "file": [f"{i:012d}.jpg" for i in range(n_images)],
            "width": np.full(n_images, 640, np.int32),
            "height": np.full(n_images, 480, np.int32),
        }
    )
    return bs, images


def _median(xs: list[float]) -> float:
    return float(np.median(xs))


def run(n_images: int, per_image: int, lookups: int, workdir: Path, repeats: int = 3) -> dict:
    """Both sides timed the same way: ``repeats`` writes and reads of each, interleaved (store,
    then JSON, in every repeat), each figure the median of its repeats."""
    bs, images = make_boxes(n_images, per_image)
    run_dir = workdir / "run"
    write_images_table(run_dir, images)
    store = PriorStore(run_dir)
    results = export_coco_results(bs, images)
    json_path = workdir / "results.json"
    timings: dict[str, list[float]] = {
        k: [] for k in ("write", "read", "read_cpu", "json_write", "json_read", "json_read_cpu")
    }
    for rep in range(repeats):
        # store: commit version ``rep`` (a version is immutable), read it whole (sha256 checked)
        t = time.perf_counter()
        store.commit(rep, {"smoothed": bs})
        timings["write"].append(time.perf_counter() - t)
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        back = store.read(rep)
        timings["read"].append(time.perf_counter() - t)
        timings["read_cpu"].append(time.process_time() - c)  # CPU seconds of all threads
        del back
        # JSON: the same boxes as one COCO results file
        t = time.perf_counter()
        with open(json_path, "w") as f:
            json.dump(results, f)
        timings["json_write"].append(time.perf_counter() - t)
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        with open(json_path) as f:
            loaded = json.load(f)
        timings["json_read"].append(time.perf_counter() - t)
        timings["json_read_cpu"].append(time.process_time() - c)
        assert len(loaded) == n_images * per_image
        del loaded
        gc.collect()
    parquet_bytes = os.path.getsize(store.file_path(0))
    json_bytes = json_path.stat().st_size
    del results
    back = store.read(0)
    assert back.equals(bs)

    rng = np.random.default_rng(1)
    probe = rng.integers(0, n_images, lookups)
    lat = np.empty(lookups)
    for i, img in enumerate(probe):
        t = time.perf_counter_ns()
        back.for_image(int(img))
        lat[i] = (time.perf_counter_ns() - t) / 1e3
    del back, bs

    med = {k: _median(v) for k, v in timings.items()}
    read_s, json_read_s = med["read"], med["json_read"]
    return {
        "images": n_images,
        "boxes": n_images * per_image,
        "repeats": repeats,
        "statistic": "median of the repeats, both sides",
        "write_s": round(med["write"], 3),
        "read_s": round(read_s, 3),
        "read_cpu_s": round(med["read_cpu"], 3),
        "lookup_median_us": round(float(np.median(lat)), 2),
        "parquet_bytes": parquet_bytes,
        "json_write_s": round(med["json_write"], 3),
        "json_read_s": round(json_read_s, 3),
        "json_read_cpu_s": round(med["json_read_cpu"], 3),
        "json_bytes": json_bytes,
        "runs_s": {k: [round(x, 3) for x in v] for k, v in timings.items()},
        "read_speedup_vs_json": round(json_read_s / read_s, 1),
        "read_cpu_speedup_vs_json": round(med["json_read_cpu"] / med["read_cpu"], 1),
        "write_speedup_vs_json": round(med["json_write"] / med["write"], 1),
        "size_ratio_json_over_parquet": round(json_bytes / parquet_bytes, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "targets_met": {
            "read_le_0.5s": read_s <= 0.5,
            "read_ge_30x": json_read_s / read_s >= 30,
            "file_ge_5x_smaller": json_bytes / parquet_bytes >= 5,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--boxes", type=int, default=50, help="boxes per image")
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="writes and reads of each side (median)")
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir, removed)")
    args = ap.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        print(json.dumps(run(args.images, args.boxes, args.lookups, workdir, args.repeats)))
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
