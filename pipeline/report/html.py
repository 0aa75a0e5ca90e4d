"""The self-contained HTML page of a run report: tables plus PNG figures embedded as base64.

No external CSS, scripts or image links: the page opens offline and can be mailed as one file.
Every value is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Sequence
from typing import Any

from joindet.pipeline.report.collect import METRICS, ReportData

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #ddd}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto}
.yes{color:#080;font-weight:bold}.no{color:#b00;font-weight:bold}
"""


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None) -> str:
    """An HTML table; numbers are right-aligned and floats shown with 4 significant digits."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f'<table class="report">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def image_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as a data URI."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def render(data: ReportData, figures: dict[str, bytes], verdict: list[tuple[str, Any, Any, bool | str | None]]) -> str:
    """The whole page. ``figures``: name -> PNG bytes (versions, metrics, training, evolution);
    ``verdict``: rows (question, before, after, holds) of the "does the loop help" table."""
    d = data.info.get("dataset", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>joindet report: {html.escape(data.run_path)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>joindet run report</h1><p><code>{html.escape(data.run_path)}</code></p>",
        "<h2 id='run'>Run</h2>",
        table(
            ["field", "value"],
            [
                ["dataset", d.get("name")],
                ["split", d.get("split")],
                ["images", d.get("num_images")],
                ["dataset root", d.get("root")],
                ["dataset fingerprint", d.get("fingerprint")],
                ["config digest", data.info.get("config_digest")],
                ["created", data.info.get("created")],
                ["joindet version", data.info.get("joindet_version")],
                [
                    "prior source / update",
                    f"{data.config.get('priors', {}).get('source')} / {data.config.get('priors', {}).get('update')}",
                ],
                ["schedule", json.dumps(data.config.get("schedule"))],
                ["versions committed", ", ".join(f"v{v.version:04d}" for v in data.versions) or "none"],
                ["epochs trained", len(data.train_log)],
                ["quarantined images", len(data.quarantine)],
            ],
        ),
    ]
    if verdict:
        parts += [
            "<h2 id='verdict'>Does the loop make priors better?</h2>",
            table(["question", "before", "after", "holds"], [[q, b, a, _holds(h)] for q, b, a, h in verdict]),
        ]
    parts += ["<h2 id='versions'>Prior versions</h2>", _versions_table(data)]
    if "versions" in figures:
        parts.append(image_tag(figures["versions"], "prior statistics across versions"))
    parts.append("<h2 id='metrics'>Priors and proposals against ground truth (class-agnostic)</h2>")
    parts += _table_and_figure(
        bool(data.prior_metrics or data.proposals),
        lambda: _metrics_table(data),
        figures.get("metrics"),
        "AP and AR across versions",
        "No metrics: the dataset has no ground truth, or evaluation was skipped.",
    )
    parts.append("<h2 id='training'>Training</h2>")
    parts += _table_and_figure(
        bool(data.train_log),
        lambda: _training_table(data),
        figures.get("training"),
        "training curves",
        "No training log (logs/train.jsonl) yet.",
    )
    parts.append("<h2 id='evolution'>Evolution of priors on fixed images</h2>")
    if "evolution" in figures:
        parts += [
            "<p>Yellow: smoothed priors of each version (10 best drawn); colour overlay: the eigen "
            "attention map the version was mined from, when stored; green: ground truth.</p>",
            image_tag(figures["evolution"], "evolution strip"),
        ]
    else:
        parts.append("<p>No committed version or no readable image.</p>")
    parts += [
        "<h2 id='timings'>Timings</h2>",
        table(["stage", "seconds", "how"], [[t.stage, t.seconds, t.how] for t in data.timings]),
        "<h2 id='quarantine'>Quarantined images</h2>",
    ]
    parts.append(
        table(["image_id", "file", "reason"], [[q["image_id"], q["file"], q["reason"]] for q in data.quarantine])
        if data.quarantine
        else "<p>None.</p>"
    )
    parts += [
        "<h2 id='config'>Configuration (run.json)</h2>",
        f"<pre>{html.escape(json.dumps(data.config, indent=2, sort_keys=True))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _table_and_figure(
    present: bool, make_table: Callable[[], str], png: bytes | None, alt: str, absent: str
) -> list[str]:
    """A section's body: its table and figure when there is data, else one line saying why not."""
    if not present:
        return [f"<p>{html.escape(absent)}</p>"]
    return [make_table()] + ([image_tag(png, alt)] if png is not None else [])


def _versions_table(data: ReportData) -> str:
    rows = []
    for v in data.versions:
        ch = v.churn or {}
        for kind in v.kinds:
            s = v.stats[kind]
            first = kind == v.kinds[0]
            rows.append(
                [
                    f"v{v.version:04d}" if first else "",
                    "" if not first or v.parent is None else f"v{v.parent:04d}",
                    kind,
                    s.get("boxes"),
                    s.get("boxes_per_image_mean"),
                    s.get("mean_box_area"),
                    s.get("mean_score"),
                    v.degenerate_maps if first else "",
                    *(
                        [ch.get("matched"), ch.get("added"), ch.get("removed"), ch.get("mean_iou")]
                        if first and v.churn
                        else ["", "", "", ""]
                    ),
                ]
            )
    return table(
        [
            "version",
            "parent",
            "kind",
            "boxes",
            "boxes / image",
            "mean box area",
            "mean score",
            "degenerate maps",
            "matched",
            "added",
            "removed",
            "mean IoU matched",
        ],
        rows,
        "Churn: smoothed boxes of a version against its parent's (one-to-one, IoU >= 0.5). Degenerate "
        "maps: share of the version's eigen attention maps with no foreground (all zero).",
    )


def _metrics_table(data: ReportData) -> str:
    rows = []
    for key in sorted(data.prior_metrics, key=lambda k: int(k.lstrip("v"))):
        for kind, m in sorted(data.prior_metrics[key].items()):
            rows.append([f"priors {key}", kind, "train", *[m.get(x) for x in METRICS]])
    for p in data.proposals:
        rows.append(
            [f"detector epoch {p.get('epoch')}", "proposals", p.get("split"), *[p["metrics"].get(x) for x in METRICS]]
        )
    return table(["boxes", "kind", "split", *METRICS], rows)


def _training_table(data: ReportData) -> str:
    names = sorted({k for r in data.train_log for k in (r.get("losses") or {})})
    rows = [
        [
            r["epoch"],
            r.get("prior_version"),
            r.get("loss"),
            *[(r.get("losses") or {}).get(n) for n in names],
            r.get("lr"),
            r.get("seconds"),
        ]
        for r in data.train_log
    ]
    return table(["epoch", "priors", "loss", *names, "lr", "seconds"], rows)


def _holds(h: bool | str | None) -> str:
    """yes / no for a change beyond the tolerance, the text itself ("within noise"), n/a for none."""
    if isinstance(h, str):
        return h
    return "n/a" if h is None else ("yes" if h else "no")


def _cell(v: Any) -> str:
    if v is None:
        return "<td>-</td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, float):
        return f'<td class="num">{v:.4g}</td>'
    if isinstance(v, int):
        return f'<td class="num">{v}</td>'
    if v in ("yes", "no"):
        return f'<td class="{v}">{v}</td>'
    return f"<td>{html.escape(str(v))}</td>"
