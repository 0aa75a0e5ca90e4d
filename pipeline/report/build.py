"""Build a run report: evaluate what is missing (optional), draw the figures, write HTML + PNGs.

``build_report(run, out)`` writes ``out`` (one self-contained HTML page) and, beside it,
``<stem>-<figure>.png`` for every figure the page embeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.report.collect import ReportData, collect
from joindet.pipeline.report.evolution import StripCell, StripRow, evolution_figure
from joindet.pipeline.report.figures import metrics_figure, training_figure, version_stats_figure
from joindet.pipeline.report.html import render
from joindet.pipeline.run_dir import RunDir
from joindet.priors import AttentionStore

#: Prior kinds scored against ground truth when the report evaluates.
EVAL_KINDS = ("smoothed", "region", "instance")


@dataclass
class ReportResult:
    """Where the report went: the HTML page, the PNG files, and the data it shows."""

    html: Path
    figures: dict[str, Path] = field(default_factory=dict)
    data: ReportData | None = None
    verdict: list[tuple[str, Any, Any, bool | str | None]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_report(
    run: RunDir,
    out: str | Path,
    evaluate: bool = True,
    proposals: bool = True,
    num_images: int = 4,
    progress: Progress = NULL_PROGRESS,
    tolerance: float | None = None,
) -> ReportResult:
    """Write the report of ``run`` to ``out`` (HTML) and its PNGs beside it.

    ``evaluate``: when the dataset has ground truth, score every (version, kind) missing from
    ``RUN/metrics/priors.json``; ``proposals``: also score the last checkpoint's proposals on
    ``data.eval_split`` when not yet done (a forward pass over that split). ``num_images``: rows
    of the evolution strip (the first images of the index that are not quarantined).
    ``tolerance``: the AR@100 change the verdict counts (default ``AR_TOLERANCE``; pass the
    spread measured across seeds when known).
    """
    progress = progress or NULL_PROGRESS
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    notes = ensure_metrics(run, proposals=proposals, progress=progress) if evaluate else []
    data = collect(run)
    chance = None
    if evaluate and data.prior_metrics:
        splits = dict.fromkeys([run.config.data.split, *(str(p.get("split")) for p in data.proposals)])
        chance = {s: m for s in splits if (m := chance_metrics(run, s))}
    pngs = {
        "versions": version_stats_figure(data.versions),
        "metrics": metrics_figure(data.prior_metrics, data.proposals),
        "training": training_figure(data.train_log),
        "evolution": evolution_figure(strip_rows(run, num_images), [v.version for v in data.versions]),
    }
    pngs = {k: v for k, v in pngs.items() if v is not None}
    verdict = loop_verdict(data, chance, AR_TOLERANCE if tolerance is None else tolerance)
    for split, refs in (chance or {}).items():
        for crops, metrics in refs.items():
            verdict.append(
                (
                    f"for scale: AR@100 of {crops} random crops per image ({split} split, seed 0)",
                    None,
                    metrics["AR@100"],
                    None,
                )
            )
    out.write_text(render(data, pngs, verdict), encoding="utf-8")
    paths = {}
    for name, png in pngs.items():
        paths[name] = out.with_name(f"{out.stem}-{name}.png")
        paths[name].write_bytes(png)
    return ReportResult(html=out, figures=paths, data=data, verdict=verdict, notes=notes)


def ensure_metrics(run: RunDir, proposals: bool = True, progress: Progress = NULL_PROGRESS) -> list[str]:
    """Evaluate the (version, kind) pairs and the last checkpoint's proposals not yet in
    ``RUN/metrics``; returns notes on what could not be evaluated (e.g. no ground truth)."""
    from joindet.pipeline import stages
    from joindet.pipeline.report.collect import read_json

    try:
        has_gt = bool((run.dataset().coco_ground_truth() or {}).get("annotations"))
    except (OSError, ValueError) as exc:
        return [f"priors not evaluated: {exc}"]
    if not has_gt:
        return ["priors not evaluated: the run's dataset has no ground-truth boxes"]
    done = read_json(run.path / "metrics" / "priors.json") or {}
    for v in run.store.versions():
        kinds = tuple(k for k in EVAL_KINDS if k in run.store.manifest(v).kinds and k not in done.get(f"v{v:04d}", {}))
        if kinds:
            progress.log(f"evaluating priors v{v:04d} ({', '.join(kinds)})")
            stages.evaluate_priors(run, versions=[v], kinds=kinds)
    notes: list[str] = []
    last = run.last_checkpoint()
    from joindet.pipeline.stages.evaluate import eval_split

    split = eval_split(run)  # a coco-json run's own split: its one annotations file
    if (
        proposals
        and last is not None
        and not (run.path / "metrics" / f"proposals-epoch-{last:04d}-{split}.json").exists()
    ):
        try:
            stages.evaluate_proposals(run, epoch=last, split=split, progress=progress)
        except (OSError, ValueError) as exc:
            notes.append(f"proposals not evaluated: {exc}")
    return notes


#: Random crops per image of the chance references: the default of ``priors.random_crops``, and
#: as many boxes as the top-100 proposals that AR@100 scores.
CHANCE_CROPS = (30, 100)
#: Smallest change of AR@100 (absolute) the verdict calls a change when no spread across seeds is
#: given: on a few hundred images AR@100 moves by about 0.01 between seeds of the same setting
#: (docs/ablations.md), so 0.02 is twice that.
AR_TOLERANCE = 0.02
#: ``holds`` of a verdict row whose change does not exceed the tolerance.
WITHIN_NOISE = "within noise"
Holds = bool | str | None


def chance_metrics(run: RunDir, split: str | None = None) -> dict[int, dict[str, float | None]]:
    """Class-agnostic metrics of k random crops per image (``priors.random_crops``, seed 0) on
    ``split`` (None: the run's own split, without its quarantined images), for each k in
    ``CHANCE_CROPS``: what boxes with no information about the image score with the same box budget."""
    from joindet.pipeline.stages import coco_metrics
    from joindet.pipeline.stages.evaluate import detections_array
    from joindet.priors import random_crops

    if split is None or split == run.config.data.split:
        images = run.images()
        ids = np.setdiff1d(images.column("image_id").to_numpy(), np.asarray(sorted(run.quarantined_ids()), np.int64))
        gt = run.dataset().coco_ground_truth()
    else:
        dataset = run.dataset(split=split)
        images = dataset.index()
        ids = images.column("image_id").to_numpy()
        gt = dataset.coco_ground_truth()
    if not gt or not gt.get("annotations"):
        return {}
    return {k: coco_metrics(gt, detections_array(random_crops(ids, k, seed=0), images), ids) for k in CHANCE_CROPS}


def strip_rows(run: RunDir, num_images: int) -> list[StripRow]:
    """The evolution strip's rows: the first ``num_images`` readable images of the index."""
    versions = run.store.versions()
    if not versions or num_images < 1:
        return []
    dataset = run.dataset()
    gt = dataset.coco_ground_truth() or {}
    gt_boxes: dict[int, list[list[float]]] = {}
    for a in gt.get("annotations", []):
        gt_boxes.setdefault(int(a["image_id"]), []).append(list(a["bbox"]))
    quarantined = run.quarantined_ids()
    boxes = {v: run.store.read(v, "smoothed") for v in versions}
    attention = AttentionStore(run.path)
    stored = set(attention.versions())
    rows: list[StripRow] = []
    for image_id in run.image_ids():
        if len(rows) >= num_images:
            break
        if int(image_id) in quarantined:
            continue
        try:
            image = dataset.load(int(image_id))
        except Exception:  # noqa: BLE001 - an unreadable image just leaves the strip
            continue
        cells = {}
        for v in versions:
            b = boxes[v].for_image(int(image_id))
            amap = attention.read(v, int(image_id)) if v in stored else None
            cells[v] = StripCell(b.boxes, b.scores, amap)
        truth = np.asarray(gt_boxes.get(int(image_id), []), np.float64).reshape(-1, 4) if gt else None
        rows.append(StripRow(int(image_id), image, cells, truth))
    return rows


def loop_verdict(
    data: ReportData,
    chance: dict[str, dict[int, dict[str, float | None]]] | None = None,
    tolerance: float = AR_TOLERANCE,
) -> list[tuple[str, Any, Any, Holds]]:
    """Rows (question, before, after, holds) of the report's verdict, like compared with like.

    - smoothed priors AR@100 of the last version vs v0, both on the train split;
    - the last checkpoint's proposals AR@100 on their split vs ``CHANCE_CROPS[-1]`` random crops
      per image on the same split (``chance[split]``);
    - one row per version whose smoothed AR@100 is below that many random crops on the train
      split (holds False: flagged).

    ``holds`` is True / False only when the change exceeds ``tolerance`` (absolute AR@100; give
    the spread measured across seeds when there is one), else ``WITHIN_NOISE``.
    """
    chance = chance or {}
    pm = data.prior_metrics
    keys = sorted(pm, key=lambda k: int(k.lstrip("v")))
    v0 = (pm.get("v0000") or {}).get("smoothed", {}).get("AR@100")
    rows: list[tuple[str, Any, Any, Holds]] = []
    if v0 is None:
        return rows
    split = data.config.get("data", {}).get("split", "train")
    last_key = keys[-1]
    last = (pm[last_key].get("smoothed") or {}).get("AR@100")
    if last_key != "v0000":
        rows.append(
            (
                f"AR@100 of smoothed priors: v0000 -> {last_key} ({split} split; change > {tolerance:g} to count)",
                v0,
                last,
                judge(v0, last, tolerance),
            )
        )
    crops = CHANCE_CROPS[-1]
    if data.proposals:
        p = max(data.proposals, key=lambda r: int(r.get("epoch", -1)))
        ar = p["metrics"].get("AR@100")
        ref = (chance.get(str(p.get("split"))) or {}).get(crops, {}).get("AR@100")
        if ref is not None:
            rows.append(
                (
                    f"AR@100 ({p.get('split')} split): {crops} random crops per image -> detector epoch "
                    f"{p.get('epoch')} proposals (change > {tolerance:g} to count)",
                    ref,
                    ar,
                    judge(ref, ar, tolerance),
                )
            )
    ref = (chance.get(split) or {}).get(crops, {}).get("AR@100")
    if ref is not None:
        for key in keys:
            ar = (pm[key].get("smoothed") or {}).get("AR@100")
            if ar is not None and ar < ref:
                rows.append(
                    (
                        f"flag: {key} smoothed priors below {crops} random crops per image ({split} split)",
                        ref,
                        ar,
                        False,
                    )
                )
    return rows


def judge(before: float | None, after: float | None, tolerance: float) -> Holds:
    """True when ``after`` exceeds ``before`` by more than ``tolerance``, False when it falls short
    by more, ``WITHIN_NOISE`` otherwise; None when either is missing."""
    if before is None or after is None:
        return None
    if after - before > tolerance:
        return True
    if before - after > tolerance:
        return False
    return WITHIN_NOISE
