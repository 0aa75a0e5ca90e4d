"""Plain-data views of flow results: flattened metrics, artifact rows, the one-screen summary."""

from __future__ import annotations

from typing import Any


def numeric_leaves(d: Any, prefix: str = "") -> dict[str, float | int]:
    """Flatten nested metric dicts to ``{"v0002.smoothed.AR@100": 0.31, ...}`` (numbers only)."""
    out: dict[str, float | int] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(numeric_leaves(v, f"{prefix}{k}."))
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        out[prefix.rstrip(".")] = d
    return out


def version_table(version: int, statistics: dict[str, Any], metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"version", "field", "value"}`` for the Prefect table artifact of one version."""
    rows = [{"version": version, "field": k, "value": v} for k, v in numeric_leaves(statistics).items()]
    rows += [{"version": version, "field": k, "value": v} for k, v in numeric_leaves(metrics).items()]
    return rows


def format_report(report: dict[str, Any]) -> list[str]:
    """The one-screen summary of a pretrain flow run, ending with where to look next."""
    run = report["run"]
    lines = [f"pretrain finished in {report['seconds']:.1f} s: {run}"]
    for v in report["versions"]:
        what = "committed now" if v["committed_now"] else "already committed"
        shards = f", shards mined {v['mined']} reused {v['reused']}" if v["mined"] or v["reused"] else ""
        boxes = v["statistics"].get("boxes")
        if isinstance(boxes, dict):
            boxes = boxes.get("smoothed")
        shown_boxes = f", {boxes} smoothed boxes" if boxes is not None else ""
        ar = next(
            (f", AR@100={val:.3f}" for k, val in numeric_leaves(v["metrics"]).items() if k.endswith("AR@100")), ""
        )
        lines.append(f"  v{v['version']:04d}: {what}{shards}{shown_boxes}{ar}")
    lines.append(f"  last checkpoint: epoch {report['trained_to']}")
    if report["quarantined"]:
        ids = ", ".join(str(q["image_id"]) for q in report["quarantined"][:10])
        lines.append(f"  quarantined images ({len(report['quarantined'])}): {ids} (see {run}/quarantine.parquet)")
    lines += [
        "Next:",
        f"  joindet runs status {run}",
        f"  joindet priors ls {run}",
        f"  joindet report {run}",
        f"  joindet eval proposals {run}",
    ]
    return lines
