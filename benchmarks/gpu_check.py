"""GPU check: the paper preset at 800 px with AMP, in a few minutes on one GPU; one JSON line.

Four parts, each the code path the pipeline runs:

- ``train``: the pipeline's training step (``train_loop.train_step``: autocast + grad scaler on
  CUDA, embedding targets, Hungarian matching, AdamW) on random images of ``--size`` px with
  random prior boxes: images/s (median of ``--steps`` timed steps after a warm-up) and peak
  memory (``torch.cuda.max_memory_allocated``; on CPU the process's peak RSS).
- ``mine``: ``mine_shard`` on ``--mine-images`` synthetic images against the model's forward pass
  alone on the same batches (benchmarks/bench_mine.py), interleaved, medians: images/s of each.
- ``eigen_attention``: the maps of the encoder features of one batch computed on the device and
  on the CPU: smallest |cos| between the two per image (sign-fixed unit eigenvectors: 1 = same
  map), and the time of each.
- ``deform_attn``: the multi-scale deformable attention op on the preset's level shapes at
  ``--size`` px (encoder-shaped call, batch 2) in float16 and bfloat16 against float32: largest
  absolute and relative error, time of each (a dtype the device cannot run is reported as such).

``--device cpu --smoke`` runs the same code at a tiny size (128 px, 1 timed step, 2 mining images)
so the script is known to work before a GPU is at hand (about 30 s on this project's 2-core CPU
when it is quiet; a few minutes when other jobs load it).

    python benchmarks/gpu_check.py                   # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --smoke
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mine  # noqa: E402  (benchmarks/ is not a package)
from bench_detector import level_shapes, median_time, random_batch, sync  # noqa: E402

from joindet.detector import build_model  # noqa: E402
from joindet.detector.deform_attn import ms_deform_attn  # noqa: E402
from joindet.detector.transformer import encoder_reference_points  # noqa: E402
from joindet.pipeline.config import make_config  # noqa: E402
from joindet.pipeline.distributed import DistInfo  # noqa: E402
from joindet.pipeline.stages.train_loop import build_train_parts, train_step  # noqa: E402
from joindet.priors import eigen_attention  # noqa: E402


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _batch(size: int, batch: int, device: torch.device):
    """Random images and prior boxes (10 per image, no embedding targets: the training step makes them)."""
    return random_batch(size, device, batch, boxes_per_image=10, pad_from=0.8)


def check_train(preset: str, size: int, batch: int, steps: int, device: torch.device) -> dict:
    cfg = make_config(preset, "synthetic", [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parts = build_train_parts(cfg, DistInfo(device=device))
    images, pad, targets = _batch(size, batch, device)
    parts.model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses: list[float] = []

    def step() -> None:
        losses.append(train_step(parts, images, pad, [dict(t) for t in targets])[1])

    train_step(parts, images, pad, [dict(t) for t in targets])  # warm-up (cuDNN autotune, allocator)
    step_s = median_time(step, device, steps, warmup=0)
    return {
        "preset": preset,
        "image_size": size,
        "batch": batch,
        "amp": parts.amp,
        "steps": steps,
        "step_s": round(step_s, 4),
        "images_per_s": round(batch / step_s, 2),
        "peak_memory_mb": _peak_mb(device),
        "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],  # train_step raises on a non-finite loss
    }


def check_mine(preset: str, size: int, images: int, batch: int, reps: int, device: torch.device, base: Path) -> dict:
    overrides = [f"model.test_size={size}", f"model.max_size={size}"]
    run = bench_mine.make_run(base, images, size, batch, overrides, preset=preset, device=str(device))
    bench_mine.forward_only(run)  # warm-up
    bench_mine.mine_once(run, bench_mine.Split())
    forward, mined = [], []
    for rep in range(reps):
        order = ("forward", "mine") if rep % 2 == 0 else ("mine", "forward")
        for what in order:
            sync(device)
            t0 = time.perf_counter()
            if what == "forward":
                bench_mine.forward_only(run)
                sync(device)
                forward.append(time.perf_counter() - t0)
            else:
                bench_mine.mine_once(run, bench_mine.Split())
                sync(device)
                mined.append(time.perf_counter() - t0)
    f, m = statistics.median(forward), statistics.median(mined)
    return {
        "images": images,
        "image_size": size,
        "batch": batch,
        "reps": reps,
        "forward_images_per_s": round(images / f, 2),
        "mine_images_per_s": round(images / m, 2),
        "ratio": round(f / m, 3),
    }


def check_eigen(preset: str, size: int, batch: int, device: torch.device) -> dict:
    cfg = make_config(preset, "synthetic", []).model
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg).to(device).eval()
    images, pad, _ = _batch(size, batch, device)
    with torch.inference_mode(), torch.autocast(device.type, enabled=device.type == "cuda"):
        out = model(images, pad)
    feats, valid = out["enc_features"].float(), out["enc_valid"]
    timings = {}
    maps = {}
    for where, (f, v) in {"device": (feats, valid), "cpu": (feats.cpu(), valid.cpu())}.items():
        eigen_attention(f, v)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        maps[where] = eigen_attention(f, v).cpu().flatten(1)
        sync(device)
        timings[where] = time.perf_counter() - t0
    a, b = maps["device"], maps["cpu"]
    cos = (a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    degenerate = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
    cos = torch.where(degenerate, torch.ones_like(cos), cos)
    return {
        "map_hw": list(feats.shape[1:3]),
        "batch": batch,
        "min_abs_cos": round(float(cos.min()), 6),
        "device_s": round(timings["device"], 4),
        "cpu_s": round(timings["cpu"], 4),
    }


def check_deform(preset: str, size: int, device: torch.device, reps: int) -> dict:
    cfg = make_config(preset, "synthetic", []).model
    shapes_list = level_shapes(size, cfg.num_feature_levels)
    shapes = torch.tensor(shapes_list, dtype=torch.long, device=device)
    n, m, lv, p = 2, cfg.n_heads, cfg.num_feature_levels, cfg.n_points
    dh = cfg.d_model // m
    s = sum(h * w for h, w in shapes_list)
    g = torch.Generator().manual_seed(0)
    ref = encoder_reference_points(shapes, torch.ones(n, lv, 2, device=device))
    value = torch.randn(n, s, m, dh, generator=g).to(device)
    loc = (ref[:, :, None, :, None, :] + torch.randn(n, s, m, lv, p, 2, generator=g).to(device) * 0.02).clamp(0, 1)
    weights = torch.rand(n, s, m, lv * p, generator=g).softmax(-1).view(n, s, m, lv, p).to(device)

    def timed(dtype: torch.dtype) -> tuple[torch.Tensor, float]:
        args = (value.to(dtype), shapes, loc.to(dtype), weights.to(dtype))
        last: dict[str, torch.Tensor] = {}

        def call() -> None:
            last["out"] = ms_deform_attn(*args)

        with torch.no_grad():
            seconds = median_time(call, device, reps)  # one warm-up call first
        return last["out"].float(), seconds

    full, full_s = timed(torch.float32)
    result: dict = {"levels": shapes_list, "tokens": s, "float32_s": round(full_s, 5)}
    scale = full.abs().max().clamp_min(1e-12)
    for name, dtype in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        try:
            low, low_s = timed(dtype)
        except (RuntimeError, NotImplementedError) as exc:
            result[name] = {"unsupported": str(exc).splitlines()[0][:160]}
            continue
        err = (low - full).abs().max()
        result[name] = {
            "max_abs_err": float(err),
            "max_rel_err": round(float(err / scale), 6),
            "seconds": round(low_s, 5),
            "speedup_vs_float32": round(full_s / low_s, 2),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the same code path in seconds")
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--size", type=int, default=None, help="image side, pixels (800; smoke 128)")
    parser.add_argument("--batch", type=int, default=None, help="training and mining batch (2; smoke 2)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (10; smoke 1)")
    parser.add_argument("--mine-images", type=int, default=None, help="images mined (32; smoke 2)")
    parser.add_argument("--reps", type=int, default=None, help="repeats of mining and of the op (3; smoke 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (torch's default; smoke 1)")
    args = parser.parse_args()
    threads = args.threads if args.threads is not None else (1 if args.smoke else 0)
    if threads:
        torch.set_num_threads(threads)
    smoke = args.smoke
    size = args.size or (128 if smoke else 800)
    batch = args.batch or 2
    steps = args.steps or (1 if smoke else 10)
    mine_images = args.mine_images or (2 if smoke else 32)
    reps = args.reps or (1 if smoke else 3)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here; run with --device cpu --smoke to check the script itself")
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    try:
        result = {
            "check": "gpu",
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "smoke": smoke,
            "preset": args.preset,
            "train": check_train(args.preset, size, batch, steps, device),
            "mine": check_mine(args.preset, size, mine_images, batch, reps, device, base),
            "eigen_attention": check_eigen(args.preset, size, batch, device),
            "deform_attn": check_deform(args.preset, size, device, max(reps, 3)),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
