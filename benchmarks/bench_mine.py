"""Mining against the model's forward pass alone: how close does mining get to inference speed?

Builds a run over N synthetic images (tiny preset, one mining shard, attention maps saved, a
checkpoint of a random model whose class head predicts some foreground, as in the stage tests),
then, interleaved within every repeat (the order alternates, so load from other processes hits
both alike):

- ``forward``: the images of the shard through ``ImageBatches`` (load, resize, collate) and the
  model, in eval and inference mode, at ``mine.batch_size``: the floor mining cannot beat;
- ``mine``: ``mine_shard`` of the stage as the flow runs it, with the staged shard and the
  attention maps of the previous repeat removed first.

Prints one JSON line: medians ``forward_s``, ``mine_s``, ``ratio`` = forward_s / mine_s (1.0: mining
costs nothing beyond the forward pass), and the split of the mining repeats (medians, seconds spent
in each part): ``load_s`` (images: read, resize, collate), ``attention_s`` (token centring + eigen
attention), ``priors_s`` (region + instance priors), ``write_s`` (attention maps + the shard's
Parquet file and marker). Mining runs a batch's attention, priors and map writing on a helper
thread while the next batch loads and runs through the model, so these parts overlap the forward
pass and need not add up to ``mine_s - forward_s``: the wall-time ratio reaches 1 only where a
core is free for the helper thread. ``cpu_ratio`` compares the CPU seconds of both sides (all
threads): the work mining adds, whatever the overlap. ``--threads`` (default 1) is torch's thread
count outside the stage; mining holds it at ``model_loading.INFERENCE_THREADS`` (1), and so does
the forward-only side. Example: ``python benchmarks/bench_mine.py --images 64 --reps 5``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from joindet.detector import build_model
from joindet.pipeline.checkpoints import save_checkpoint
from joindet.pipeline.config import make_config
from joindet.pipeline.data import generate_synthetic, open_dataset
from joindet.pipeline.model_loading import INFERENCE_THREADS, checkpoint_model, fixed_threads, resolve_device
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan
from joindet.pipeline.stages.image_batches import ImageBatches
from joindet.priors.store.attention_maps import AttentionStore, MapWriter

# ``joindet.pipeline.stages.mine`` is also the name of the stage function the package exports.
mine_module = importlib.import_module("joindet.pipeline.stages.mine")
VERSION = 2


def make_run(
    base: Path, images: int, size: int, batch_size: int, overrides: list[str], preset: str = "tiny", device: str = "cpu"
) -> RunDir:
    """A run of ``images`` synthetic images of ``size`` px, one mining shard, maps saved, and the
    checkpoint of epoch VERSION - 1 (random weights, class bias 0) to mine VERSION with."""
    data = base / "data"
    generate_synthetic(data, images, size, seed=0, val_images=1)
    cfg = make_config(
        preset,
        "synthetic",
        [
            f"data.root={data}",
            "mine.shards=1",
            f"mine.batch_size={batch_size}",
            f"mine.device={device}",
            "mine.save_attention=true",
            *overrides,
        ],
    )
    run = RunDir.create(base / "run", cfg, dataset=open_dataset("synthetic", root=data, split="train"))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg.model)
    with torch.no_grad():
        model.class_embed.bias.zero_()  # about half of the queries say foreground: instance priors run
    save_checkpoint(
        run.checkpoint_path(VERSION - 1), model=model, epoch=VERSION - 1, config_digest=cfg.digest(), prior_version=0
    )
    return run


class Split:
    """Wall time of the mining stage's parts, by patching the names ``mine.py`` calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.saved: list[tuple[object, str, object]] = []

    def timed(self, key: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - t0

        return wrapper

    def patch(self, owner: object, name: str, key: str) -> None:
        original = getattr(owner, name)
        self.saved.append((owner, name, original))
        setattr(owner, name, self.timed(key, original))

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for name, key in (
            ("centre_tokens", "attention_s"),
            ("eigen_attention", "attention_s"),
            ("region_priors", "priors_s"),
            ("instance_priors", "priors_s"),
            ("_save_attention", "write_s"),
        ):
            self.patch(mine_module, name, key)
        self.patch(MapWriter, "close", "write_s")
        original_iter = ImageBatches.__iter__
        split = self

        def timed_iter(batches: ImageBatches):
            it = original_iter(batches)
            while True:
                t0 = time.perf_counter()
                try:
                    batch = next(it)
                except StopIteration:
                    split.seconds["load_s"] += time.perf_counter() - t0
                    return
                split.seconds["load_s"] += time.perf_counter() - t0
                yield batch

        ImageBatches.__iter__ = timed_iter
        try:
            yield
        finally:
            ImageBatches.__iter__ = original_iter
            for owner, name, original in reversed(self.saved):
                setattr(owner, name, original)
            self.saved.clear()


def forward_only(run: RunDir) -> None:
    """The shard's images through the model alone, as mining batches them (and at its thread count)."""
    cfg = run.config
    device = resolve_device(cfg.mine.device)
    model = checkpoint_model(cfg, run.checkpoint_path(VERSION - 1), device)
    ids = RunPlan(run).shards()[0]
    batches = ImageBatches(run.dataset(), ids, cfg.model.test_size, cfg.model.max_size, cfg.mine.batch_size)
    with fixed_threads(INFERENCE_THREADS), torch.inference_mode():
        for batch in batches:
            model(batch.images.to(device), batch.pad_mask.to(device))


def mine_once(run: RunDir, split: Split) -> float:
    shutil.rmtree(run.path / "priors" / "_staging", ignore_errors=True)
    shutil.rmtree(AttentionStore(run.path).path(VERSION), ignore_errors=True)
    store_write = run.store.__class__.write_shard
    run.store.__class__.write_shard = split.timed("write_s", store_write)
    try:
        with split.installed():
            t0 = time.perf_counter()
            result = mine_module.mine_shard(str(run.path), VERSION, 0)
            seconds = time.perf_counter() - t0
    finally:
        run.store.__class__.write_shard = store_write
    if result.skipped:
        raise RuntimeError("the shard was skipped: the benchmark did not remove the previous repeat's output")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=160, help="synthetic image side, pixels (the tiny preset's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. priors.tau=0.5")
    parser.add_argument("--keep", default=None, help="build the run here and keep it (default: a temp dir)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_mine_"))
    try:
        run = make_run(base, args.images, args.size, args.batch_size, args.set)
        forward_only(run)  # warm-up: model load (cached per process), first-call allocations
        mine_once(run, Split())
        load_before = os.getloadavg()[0]
        forward, mined, parts = [], [], defaultdict(list)
        cpu: dict[str, list[float]] = {"forward": [], "mine": []}
        for rep in range(args.reps):
            split = Split()
            order = ("forward", "mine") if rep % 2 == 0 else ("mine", "forward")
            for what in order:
                c0 = time.process_time()
                if what == "forward":
                    t0 = time.perf_counter()
                    forward_only(run)
                    forward.append(time.perf_counter() - t0)
                else:
                    mined.append(mine_once(run, split))
                cpu[what].append(time.process_time() - c0)
            for key in ("load_s", "attention_s", "priors_s", "write_s"):
                parts[key].append(split.seconds[key])
        med_f, med_m = statistics.median(forward), statistics.median(mined)
        files = sorted(p for p in (AttentionStore(run.path).path(VERSION) / "maps").rglob("*") if p.is_file())
        print(
            json.dumps(
                {
                    "bench": "mine",
                    "images": args.images,
                    "image_size": args.size,
                    "batch_size": args.batch_size,
                    "threads": torch.get_num_threads(),
                    "mining_threads": INFERENCE_THREADS,
                    "reps": args.reps,
                    "attention_maps": True,
                    "attention_files": len(files),
                    "forward_s": round(med_f, 4),
                    "mine_s": round(med_m, 4),
                    "ratio": round(med_f / med_m, 3),
                    **{k: round(statistics.median(v), 4) for k, v in parts.items()},
                    "ratio_per_rep": [round(f / m, 3) for f, m in zip(forward, mined)],
                    "forward_cpu_s": round(statistics.median(cpu["forward"]), 4),
                    "mine_cpu_s": round(statistics.median(cpu["mine"]), 4),
                    "cpu_ratio": round(statistics.median(cpu["forward"]) / statistics.median(cpu["mine"]), 3),
                    "loadavg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                }
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
