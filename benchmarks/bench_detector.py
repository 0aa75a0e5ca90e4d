"""Detector timings: training step and inference for the tiny and paper presets at batch 2, the
share of the step spent in multi-scale deformable attention, and (when the Deformable-DETR
repository is available locally) our attention op against its pure-PyTorch reference.

Prints one JSON line. Example: ``python benchmarks/bench_detector.py --reps 3``; the op-level
cases alone (seconds, no model step): ``python benchmarks/bench_detector.py --op-only --threads 1``.

Op-level cases (``op_cases``): for each preset, an encoder-shaped call (every token queries, at its
own cell centre) and a decoder-shaped call (``num_queries`` queries at random points) on synthetic
inputs of the preset's level shapes at batch 2, forward + backward, the implementations timed in
turn within every repeat (interleaved, so load from other processes hits both alike), median of
the repeats. ``op``: the sampling op alone on the same contiguous [N, S, M, Dh] value (the layout a
``Linear`` gives, as in the reference model). ``module``: value projection + op, ours as
``MSDeformAttn`` computes it (channel-first projection) against the plain ``Linear`` + reference
op, same weights and inputs.

Embedding targets (``bench_embedding_steps``): the pipeline's training step, whose targets pool the
C5 of the forward pass, against the step as it was (targets from a backbone pass of their own),
interleaved in one run; ``backbone_passes_per_train_step`` counts the backbone's runs over the
batch's images in one step (1 now; 2 before, in roi_align mode).

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
import math
import os
import statistics
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import joindet.detector.deform_attn as deform_attn
from joindet.detector import (
    MSDeformAttn,
    build_criterion,
    build_embedding_target,
    build_model,
    build_optimizer,
    get_preset,
    postprocess,
)
from joindet.detector.transformer import encoder_reference_points
from joindet.pipeline.stages.train_loop import TrainParts
from joindet.pipeline.stages.train_loop import train_step as pipeline_train_step

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
                check=True,
                capture_output=True,
                text=True,
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> float:
    """Median wall time of ``reps`` calls of ``fn`` after ``warmup`` untimed ones, seconds; the
    device is synchronised around each timed call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_batch(
    size: int,
    device: torch.device,
    batch: int = 2,
    boxes_per_image: int = 5,
    emb_dim: int | None = None,
    pad_from: float = 0.75,
):
    """A seeded training batch: images float ``[B, 3, size, size]``, ``pad_mask`` bool
    ``[B, size, size]`` (True on padding: the last image's rows from ``pad_from * size`` on), and
    per image ``boxes_per_image`` normalised cxcywh ``boxes``, ``labels`` 1 and, with ``emb_dim``,
    random embedding targets ``embs`` ``[K, emb_dim]``."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=g).to(device)
    pad = torch.zeros(batch, size, size, dtype=torch.bool, device=device)
    pad[-1, int(size * pad_from) :] = True  # one padded image, as in real batches
    targets = []
    for _ in range(batch):
        centre = torch.rand(boxes_per_image, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(boxes_per_image, 2, generator=g) * 0.3 + 0.05
        target = {
            "boxes": torch.cat([centre, wh], 1).to(device),
            "labels": torch.ones(boxes_per_image, dtype=torch.long, device=device),
        }
        if emb_dim is not None:
            target["embs"] = torch.randn(boxes_per_image, emb_dim, generator=g).to(device)
        targets.append(target)
    return images, pad, targets


def _attn_op_time(op: Callable, calls: list[tuple], device: torch.device, reps: int) -> float:
    def run() -> None:
        for value, shapes, loc, weights in calls:
            v, loc_, w = (t.detach().requires_grad_(True) for t in (value, loc, weights))
            op(v, shapes, loc_, w).sum().backward()

    return median_time(run, device, reps)


def bench_preset(name: str, size: int, device: torch.device, reps: int, reference: Callable | None) -> dict:
    cfg = get_preset(name)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg).to(device)
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(model, cfg)
    images, pad, targets = random_batch(size, device, emb_dim=cfg.emb_dim)

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

    step_s = median_time(train_step, device, reps)
    infer_s = median_time(inference, device, reps)
    emb_steps = bench_embedding_steps(cfg, model, criterion, optimizer, images, pad, targets, device, reps)

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
    # Contiguous values for both ops: the layout the reference model feeds its op (ours is given a
    # channel-first view by MSDeformAttn; that gain is measured in the "module" op cases).
    calls = [(v.contiguous(), s, p, w) for v, s, p, w in calls]
    ours_s = _attn_op_time(original, calls, device, reps)
    result = {
        "preset": name,
        "image_size": size,
        "batch": 2,
        "attn_calls": len(calls),
        "train_step_s": round(step_s, 4),
        "inference_s": round(infer_s, 4),
        "attn_fwd_bwd_s": round(ours_s, 4),
        "attn_share_of_step": round(ours_s / step_s, 3),
        **emb_steps,
    }
    if reference is not None:
        ref_s = _attn_op_time(reference, calls, device, reps)
        diff = max((original(v, s, p, w) - reference(v, s, p, w)).abs().max().item() for v, s, p, w in calls)
        result.update(
            {
                "ref_attn_fwd_bwd_s": round(ref_s, 4),
                "attn_ratio_ours_over_ref": round(ours_s / ref_s, 3),
                "max_abs_diff_vs_ref": diff,
            }
        )
    return result


def bench_embedding_steps(cfg, model, criterion, optimizer, images, pad, targets, device, reps: int) -> dict:
    """The pipeline's training step (``train_loop.train_step``: embedding targets pooled from the
    forward pass's C5) against the step as it was before (targets from a backbone pass of their
    own, then the forward pass), interleaved, median of ``reps``; and how many times the backbone
    runs over the batch's images in one step of each (a hook on the stem convolution, counting
    calls whose input is the batch itself; crop-mode targets also run layer1-2 on their crops).
    """
    target = build_embedding_target(cfg)
    amp = device.type == "cuda"
    parts = TrainParts(
        model=model,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=None,
        scaler=torch.amp.GradScaler(device.type, enabled=amp),
        transforms=[],
        emb_target=target,
        device=device,
        amp=amp,
        clip_max_norm=float(cfg.clip_max_norm),
    )
    boxes = [t["boxes"] for t in targets]

    def after() -> None:
        model.train()
        pipeline_train_step(parts, images, pad, [dict(t) for t in targets])

    def before() -> None:
        model.train()
        tgts = [dict(t, embs=e) for t, e in zip(targets, target(model, images, pad, boxes))]
        with torch.autocast(device.type, enabled=amp):
            outputs = model(images, pad)
        total = criterion.total(criterion(outputs, tgts))
        optimizer.zero_grad(set_to_none=True)
        parts.scaler.scale(total).backward()
        parts.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_max_norm)
        parts.scaler.step(optimizer)
        parts.scaler.update()

    def passes(step: Callable[[], None]) -> int:
        calls = []
        stem = model.backbone.body.conv1
        hook = stem.register_forward_hook(lambda _m, inp, _o: calls.append(inp[0].shape == images.shape))
        try:
            step()
        finally:
            hook.remove()
        return sum(calls)

    passes_before, passes_after = passes(before), passes(after)
    times: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(reps):
        for key, step in (("before", before), ("after", after)):
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            times[key].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "emb_target": cfg.emb_target,
        "backbone_passes_per_train_step": passes_after,
        "backbone_passes_per_train_step_before": passes_before,
        "train_step_with_emb_before_s": round(med["before"], 4),
        "train_step_with_emb_after_s": round(med["after"], 4),
        "train_step_with_emb_after_over_before": round(med["after"] / med["before"], 3),
    }


def level_shapes(size: int, n_levels: int) -> list[tuple[int, int]]:
    """(H, W) of each level for a square image of ``size`` px: C3-C5 (strides 8-32, each stride-2
    layer rounding up) and stride-2 extras, the coarsest ``n_levels`` of C3-C5 first."""
    side, sides = size, []
    for _ in range(5 + max(n_levels - 3, 0)):
        side = math.ceil(side / 2)
        sides.append(side)
    first = 5 - min(n_levels, 3)
    return [(h, h) for h in sides[first : first + n_levels]]


def _reference_module(attn: MSDeformAttn, reference: Callable) -> Callable:
    """The module's computation in the reference model's layout: Linear value projection."""

    def forward(query, ref_points, value_in, shapes, pad):
        n, lq, d = query.shape
        m, lv, p = attn.n_heads, attn.n_levels, attn.n_points
        value = attn.value_proj(value_in).masked_fill(pad[..., None], 0.0).view(n, -1, m, d // m)
        offsets = attn.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        weights = attn.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
        loc = (
            ref_points[:, :, None, :, None, :]
            + offsets / shapes.flip(-1).to(offsets.dtype)[None, None, None, :, None, :]
        )
        return attn.output_proj(reference(value, shapes, loc, weights))

    return forward


def bench_op_case(name: str, size: int, kind: str, device: torch.device, reps: int, reference: Callable) -> dict:
    """Ours against the reference on one encoder- or decoder-shaped call, forward + backward."""
    cfg = get_preset(name)
    shapes_list = level_shapes(size, cfg.num_feature_levels)
    shapes = torch.tensor(shapes_list, dtype=torch.long, device=device)
    s = sum(h * w for h, w in shapes_list)
    n, d, m, lv, p = 2, cfg.d_model, cfg.n_heads, cfg.num_feature_levels, cfg.n_points
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    attn = MSDeformAttn(d, lv, m, p).to(device)
    with torch.no_grad():  # trained-like: offsets and weights that vary with the query
        attn.sampling_offsets.weight.normal_(0.0, 0.05)
        attn.attention_weights.weight.normal_(0.0, 0.05)
    if kind == "encoder":
        ref_points = encoder_reference_points(shapes, torch.ones(n, lv, 2, device=device))
    else:
        ref_points = torch.rand(n, cfg.num_queries, 1, 2, generator=g).to(device).expand(-1, -1, lv, -1)
    lq = ref_points.shape[1]
    query = torch.randn(n, lq, d, generator=g).to(device)
    value_in = torch.randn(n, s, d, generator=g).to(device)
    pad = torch.zeros(n, s, dtype=torch.bool, device=device)
    with torch.no_grad():
        value = attn.value_proj(value_in).view(n, s, m, d // m)
        offsets = attn.sampling_offsets(query).view(n, lq, m, lv, p, 2)
        loc = (
            ref_points[:, :, None, :, None, :]
            + offsets / shapes.flip(-1).to(offsets.dtype)[None, None, None, :, None, :]
        )
        weights = attn.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
    ref_module = _reference_module(attn, reference)

    def op_step(op: Callable) -> Callable[[], None]:
        def step() -> None:
            v, loc_, w = (t.detach().requires_grad_(True) for t in (value, loc, weights))
            op(v, shapes, loc_, w).sum().backward()

        return step

    def module_step(forward: Callable) -> Callable[[], None]:
        def step() -> None:
            forward(query, ref_points, value_in.detach().requires_grad_(True), shapes, pad).sum().backward()

        return step

    steps = {
        "ours_op": op_step(deform_attn.ms_deform_attn),
        "ref_op": op_step(reference),
        "ours_module": module_step(attn),
        "ref_module": module_step(ref_module),
    }
    for step in steps.values():  # warm-up, and the inner count that makes a sample >= ~20 ms
        step()
    t0 = time.perf_counter()
    steps["ref_op"]()
    inner = max(1, math.ceil(0.02 / max(time.perf_counter() - t0, 1e-6)))
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(reps):
        for key, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                step()
            sync(device)
            times[key].append((time.perf_counter() - t0) / inner)
    med = {k: statistics.median(v) for k, v in times.items()}
    with torch.no_grad():
        diff = (
            (deform_attn.ms_deform_attn(value, shapes, loc, weights) - reference(value, shapes, loc, weights))
            .abs()
            .max()
            .item()
        )
    return {
        "preset": name,
        "kind": kind,
        "image_size": size,
        "batch": n,
        "levels": shapes_list,
        "queries": lq,
        "tokens": s,
        "inner": inner,
        "reps": reps,
        **{f"{k}_ms": round(v * 1e3, 3) for k, v in med.items()},
        "op_ratio": round(med["ours_op"] / med["ref_op"], 3),
        "module_ratio": round(med["ours_module"] / med["ref_module"], 3),
        "op_ratio_per_rep": [round(a / b, 3) for a, b in zip(times["ours_op"], times["ref_op"])],
        "max_abs_diff_vs_ref": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,paper")
    parser.add_argument("--tiny-size", type=int, default=160, help="square image side, pixels")
    parser.add_argument("--paper-size", type=int, default=512, help="square image side, pixels (800 on GPU)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference-repo", default=DEFAULT_REF)
    parser.add_argument("--op-only", action="store_true", help="only the op-level cases, no model step")
    parser.add_argument("--op-reps", type=int, default=9, help="repeats of each op-level case")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    reference, ref_status = load_reference(args.reference_repo)
    sizes = {"tiny": args.tiny_size, "paper": args.paper_size, "paper-single-scale": args.paper_size}
    presets = args.presets.split(",")
    load_before = os.getloadavg()
    op_cases = (
        []
        if reference is None
        else [
            bench_op_case(n, sizes[n], kind, device, args.op_reps, reference)
            for n in presets
            for kind in ("encoder", "decoder")
        ]
    )
    results = [] if args.op_only else [bench_preset(n, sizes[n], device, args.reps, reference) for n in presets]
    print(
        json.dumps(
            {
                "bench": "detector",
                "device": str(device),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "reference": ref_status,
                "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
                "backbone_passes_per_train_step": {r["preset"]: r["backbone_passes_per_train_step"] for r in results},
                "op_cases": op_cases,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
