"""Detector timings: training step and inference for the tiny and paper presets at batch 2, the
share of the step spent in multi-scale deformable attention, and (when the Deformable-DETR
repository is available locally) our attention op against its pure-PyTorch reference.

Prints one JSON line. Example: ``python benchmarks/bench_detector.py --reps 3``.

The attention share is measured by recording the inputs of every deformable-attention call of
one training step and timing the core op (forward + backward) on those inputs alone; the share is
that sum divided by the median step time. The reference op is loaded at run time from a checkout
of fundamentalvision/Deformable-DETR (``--reference-repo``, a work tree or a bare git directory);
none of its code is part of joindet.
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import subprocess
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import detector.deform_attn as deform_attn
from detector import build_criterion, build_model, build_optimizer, get_preset, postprocess

REF_FILE = "models/ops/functions/ms_deform_attn_func.py"
REF_FUNC = "ms_deform_attn_core_pytorch"
DEFAULT_REF = "/work/.mirror/fundamentalvision+Deformable-DETR/repo"


def load_reference(repo: str) -> tuple[Callable | None, str]:
    """The reference function compiled from the repository's file, or None and the reason."""
    root = Path(repo)
    try:
        if (root / REF_FILE).is_file():
            source = (root / REF_FILE).read_text()
        else:
            source = subprocess.run(
                ["git", "--git-dir", str(root), "show", f"HEAD:{REF_FILE}"],
                check=True, capture_output=True, text=True,
            ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"unavailable: cannot read {REF_FILE} from {repo} ({exc.__class__.__name__})"
    # Only the pure-PyTorch function: the module itself imports the compiled CUDA extension.
    func = next((n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == REF_FUNC), None)
    if func is None:
        return None, f"unavailable: {REF_FUNC} not found in {REF_FILE}"
    namespace = {"torch": torch, "F": F}
    exec(compile(ast.Module(body=[func], type_ignores=[]), REF_FILE, "exec"), namespace)
    return namespace[REF_FUNC], f"loaded from {repo}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _inputs(cfg, size: int, device: torch.device, batch: int = 2, boxes_per_image: int = 5):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    pad = torch.zeros(batch, size, size, dtype=torch.bool, device=device)
    pad[1, int(size * 0.75):] = True  # one padded image, as in real batches
    targets = []
    for _ in range(batch):
        centre = torch.rand(boxes_per_image, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(boxes_per_image, 2, generator=g) * 0.3 + 0.05
        targets.append({
            "boxes": torch.cat([centre, wh], 1).to(device),
            "labels": torch.ones(boxes_per_image, dtype=torch.long, device=device),
            "embs": torch.randn(boxes_per_image, cfg.emb_dim, generator=g).to(device),
        })
    return images, pad, targets


def _attn_op_time(op: Callable, calls: list[tuple], device: torch.device, reps: int) -> float:
    def run() -> None:
        for value, shapes, loc, weights in calls:
            v, l, w = (t.detach().requires_grad_(True) for t in (value, loc, weights))
            op(v, shapes, l, w).sum().backward()

    return _timed(run, device, reps)


def bench_preset(name: str, size: int, device: torch.device, reps: int, reference: Callable | None) -> dict:
    cfg = get_preset(name)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg).to(device)
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(model, cfg)
    images, pad, targets = _inputs(cfg, size, device)

    def train_step() -> None:
        model.train()
        losses = criterion(model(images, pad), targets)
        optimizer.zero_grad(set_to_none=True)
        criterion.total(losses).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_max_norm)
        optimizer.step()

    @torch.no_grad()
    def inference() -> None:
        model.eval()
        postprocess(model(images, pad))

    step_s = _timed(train_step, device, reps)
    infer_s = _timed(inference, device, reps)

    calls: list[tuple] = []
    original = deform_attn.ms_deform_attn

    def recording(value, shapes, loc, weights):
        calls.append((value.detach(), shapes, loc.detach(), weights.detach()))
        return original(value, shapes, loc, weights)

    deform_attn.ms_deform_attn = recording
    try:
        train_step()
    finally:
        deform_attn.ms_deform_attn = original
    ours_s = _attn_op_time(original, calls, device, reps)
    result = {
        "preset": name, "image_size": size, "batch": 2, "attn_calls": len(calls),
        "train_step_s": round(step_s, 4), "inference_s": round(infer_s, 4),
        "attn_fwd_bwd_s": round(ours_s, 4), "attn_share_of_step": round(ours_s / step_s, 3),
    }
    if reference is not None:
        ref_s = _attn_op_time(reference, calls, device, reps)
        diff = max(
            (original(v, s, l, w) - reference(v, s, l, w)).abs().max().item() for v, s, l, w in calls
        )
        result.update({
            "ref_attn_fwd_bwd_s": round(ref_s, 4), "attn_ratio_ours_over_ref": round(ours_s / ref_s, 3),
            "max_abs_diff_vs_ref": diff,
        })
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,paper")
    parser.add_argument("--tiny-size", type=int, default=160, help="square image side, pixels")
    parser.add_argument("--paper-size", type=int, default=512, help="square image side, pixels (800 on GPU)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference-repo", default=DEFAULT_REF)
    args = parser.parse_args()

    device = torch.device(args.device)
    reference, ref_status = load_reference(args.reference_repo)
    sizes = {"tiny": args.tiny_size, "paper": args.paper_size, "paper-single-scale": args.paper_size}
    results = [bench_preset(n, sizes[n], device, args.reps, reference) for n in args.presets.split(",")]
    print(json.dumps({
        "bench": "detector", "device": str(device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "reference": ref_status, "results": results,
    }))


if __name__ == "__main__":
    main()
