"""Line plots of a run report, rendered with matplotlib's Agg backend to PNG bytes.

Every function takes plain report data (``pipeline.report.collect``) and returns the PNG file's
bytes, or None when there is nothing to plot. x axes are epochs: a version is placed at the epoch
at which it was mined (v0 at 0), a proposals result at the number of epochs trained (checkpoint
epoch + 1), a training record at its epoch.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: reports are built on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from joindet.pipeline.report.collect import VersionInfo  # noqa: E402

#: Metrics plotted across versions (a subset of collect.METRICS, as the issue asks).
PLOTTED_METRICS = ("AP", "AP50", "AR@1", "AR@10", "AR@100")
_KIND_STYLE = {"smoothed": "-o", "region": "--s", "instance": ":^"}


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """Render and close ``fig``; the PNG file's bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def version_stats_figure(versions: list[VersionInfo]) -> bytes | None:
    """Boxes per image, mean box area (fraction of the image) per kind, and churn vs the parent."""
    if not versions:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    xs = [v.version for v in versions]
    kinds = sorted(
        {k for v in versions for k in v.kinds}, key=lambda k: list(_KIND_STYLE).index(k) if k in _KIND_STYLE else 9
    )
    for kind in kinds:
        pts = [(v.version, v.stats[kind]) for v in versions if kind in v.stats]
        style = _KIND_STYLE.get(kind, "-x")
        axes[0].plot([p[0] for p in pts], [_num(s["boxes_per_image_mean"]) for _, s in pts], style, label=kind)
        axes[1].plot([p[0] for p in pts], [_num(s["mean_box_area"]) for _, s in pts], style, label=kind)
    axes[0].set(title="boxes per image", xlabel="version (epoch)")
    axes[1].set(title="mean box area (fraction of image)", xlabel="version (epoch)")
    with_churn = [v for v in versions if v.churn]
    if with_churn:
        cx = [v.version for v in with_churn]
        for key, style in (("matched", "-o"), ("added", "--^"), ("removed", ":v")):
            axes[2].plot(cx, [_num(v.churn.get(key)) for v in with_churn], style, label=key)
        twin = axes[2].twinx()
        # With a marker: a run with one update has one point, which a bare line does not show.
        twin.plot(cx, [_num(v.churn.get("mean_iou")) for v in with_churn], "-.Dk", label="mean IoU (right)")
        twin.set_ylim(0, 1)
        # One legend for both axes, on the left: churn starts at the first update, so no point
        # lies there (a legend in a corner of the twin axes hid the 'removed' points at 0).
        handles = axes[2].get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        axes[2].legend(handles=handles, loc="center left", fontsize=8)
    axes[2].set(title="churn vs parent (smoothed boxes)", xlabel="version (epoch)")
    for ax in axes:
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0] and ax.get_legend() is None:
            ax.legend(fontsize=8)
    return png_bytes(fig)


def metrics_figure(
    prior_metrics: dict[str, dict[str, dict[str, Any]]], proposals: list[dict[str, Any]]
) -> bytes | None:
    """Class-agnostic AP/AR of each prior kind across versions, with proposals on their split.

    ``prior_metrics``: ``{"v0002": {"smoothed": {"AP": ..}}}``; ``proposals``: evaluate stage
    results ``{"epoch", "split", "metrics"}``, drawn at ``epoch + 1`` (epochs trained).
    """
    if not prior_metrics and not proposals:
        return None
    fig, axes = plt.subplots(1, len(PLOTTED_METRICS), figsize=(3.1 * len(PLOTTED_METRICS), 3.2), sharex=True)
    versions = sorted(prior_metrics, key=_version_number)
    kinds = sorted(
        {k for v in versions for k in prior_metrics[v]},
        key=lambda k: list(_KIND_STYLE).index(k) if k in _KIND_STYLE else 9,
    )
    for ax, metric in zip(axes, PLOTTED_METRICS):
        for kind in kinds:
            pts = [
                (_version_number(v), prior_metrics[v][kind].get(metric)) for v in versions if kind in prior_metrics[v]
            ]
            ax.plot([p[0] for p in pts], [_num(p[1]) for p in pts], _KIND_STYLE.get(kind, "-x"), label=f"priors {kind}")
        for split in sorted({str(p.get("split")) for p in proposals}):
            rows = [p for p in proposals if str(p.get("split")) == split]
            ax.plot(
                [int(p["epoch"]) + 1 for p in rows],
                [_num(p["metrics"].get(metric)) for p in rows],
                "-D",
                color="tab:red",
                label=f"detector proposals ({split})",
            )
        ax.set(title=metric, xlabel="epoch")
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    return png_bytes(fig)


def training_figure(log: list[dict[str, Any]]) -> bytes | None:
    """Each loss by name (final decoder layer solid, auxiliary layers ``*_N`` dashed), total loss, lr."""
    if not log:
        return None
    epochs = [int(r["epoch"]) for r in log]
    names = sorted({k for r in log for k in (r.get("losses") or {})})
    main = [n for n in names if not _is_aux(n)]
    # Constrained: the learning rate's tick labels and the legends never run into the next panel.
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), layout="constrained")
    axes[0].plot(epochs, [_num(r.get("loss")) for r in log], "-ok", label="loss (weighted total)")
    axes[0].set(title="total loss", xlabel="epoch")
    for n in names:
        style = "--" if _is_aux(n) else "-o"
        axes[1].plot(
            epochs,
            [_num((r.get("losses") or {}).get(n)) for r in log],
            style,
            label=n,
            alpha=0.5 if _is_aux(n) else 1.0,
        )
    axes[1].set(title=f"losses by name ({len(main)} terms + aux)", xlabel="epoch")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside: not over the lines
    axes[2].plot(epochs, [_num(r.get("lr")) for r in log], "-o", color="tab:green")
    axes[2].set(title="learning rate", xlabel="epoch")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))  # 4e-4, not 0.000400
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0] and ax.get_legend() is None:
            ax.legend(fontsize=7)
    return png_bytes(fig)


def _is_aux(name: str) -> bool:
    """DETR names auxiliary-layer losses ``loss_x_0``, ``loss_x_1``, ...: a numeric last part."""
    return name.rsplit("_", 1)[-1].isdigit()


def _version_number(key: str) -> int:
    return int(key.lstrip("v"))


def _num(x: Any) -> float:
    """A plotted value: None (undefined metric) becomes NaN, which matplotlib leaves as a gap."""
    return float("nan") if x is None else float(x)
