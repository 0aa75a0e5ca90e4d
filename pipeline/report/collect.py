"""Gather everything a run report shows from a run directory, as plain data (no plotting).

Sources, all read-only: ``run.json`` (config, dataset fingerprint, created time), every committed
version's ``manifest.json`` (statistics per kind, churn against the parent), ``metrics/priors.json``
and ``metrics/proposals-epoch-NNNN-<split>.json`` (written by the evaluate stage),
``logs/train.jsonl`` (one record per epoch: losses by name, lr, seconds, time) and
``quarantine.parquet``.

Timings: the stages record only some of their durations on disk, so ``stage_timings`` derives them
(a Prefect flow records when it began, logs/flow-start.json: the server start is its own line):
train epochs from the ``seconds`` of each log record; ``init_priors`` from run.json ``created`` to
the v0 manifest's ``created``; ``mine + smooth vN`` from the log ``time`` of epoch N-1 (end of the
block that vN was mined after) to vN's manifest ``created``. Derived durations have one-second
resolution and include any idle time between stages (e.g. a resumed run), which the table says.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from joindet.pipeline.flow_state import read_flow_start
from joindet.pipeline.run_dir import RunDir
from joindet.priors import churn

#: Metrics the report shows for priors and proposals (keys of the evaluate stage's dicts).
METRICS = ("AP", "AP50", "AP75", "AR@1", "AR@10", "AR@100")
#: Per-kind manifest statistics shown per version.
KIND_STATS = ("boxes", "boxes_per_image_mean", "mean_box_area", "mean_score")


@dataclass
class VersionInfo:
    """One committed version: ``stats`` per kind (manifest statistics), ``churn`` vs the parent.

    ``churn``: ``{"matched", "added", "removed", "mean_iou"}`` (IoU >= 0.5 one-to-one matches of
    smoothed boxes, see ``priors.churn``) or None for a version without parent.
    """

    version: int
    parent: int | None
    created: str
    kinds: list[str]
    stats: dict[str, dict[str, float]]
    churn: dict[str, Any] | None
    source: str | None = None
    update: str | None = None
    #: share of degenerate (all-zero) attention maps among the images mined for this version, and
    #: the encoder level mined (manifest statistics; None for baseline sources and older runs)
    degenerate_maps: float | None = None
    mined_level: str | None = None


@dataclass
class Timing:
    """How long one stage took: ``seconds`` and where the figure comes from (``recorded``/``derived``)."""

    stage: str
    seconds: float | None
    how: str


@dataclass
class ReportData:
    """Everything the report shows, JSON-able except nothing: plain dicts, lists and numbers."""

    run_path: str
    info: dict[str, Any]
    versions: list[VersionInfo] = field(default_factory=list)
    prior_metrics: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    train_log: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.info.get("config", {})


def collect(run: RunDir) -> ReportData:
    """Read a run's report data (nothing is computed that the run does not already hold, except
    churn for a manifest that lacks it)."""
    data = ReportData(run_path=str(run.path), info=dict(run.info))
    data.versions = [version_info(run, v) for v in run.store.versions()]
    # priors.json: metrics per version ("vNNNN") and the evaluation sample's record ("sample").
    metrics = read_json(run.path / "metrics" / "priors.json") or {}
    data.prior_metrics = {k: v for k, v in metrics.items() if re.fullmatch(r"v\d{4,}", k)}
    data.proposals = read_proposals(run.path / "metrics")
    data.train_log = read_train_log(run.path / "logs" / "train.jsonl")
    data.quarantine = run.quarantine().to_pylist()
    data.timings = stage_timings(data.info.get("created"), data.versions, data.train_log, read_flow_start(run.path))
    return data


def version_info(run: RunDir, version: int) -> VersionInfo:
    """Manifest statistics of one version; churn recomputed from the boxes when not recorded."""
    m = run.store.manifest(version)
    stats = {k: {s: m.stats.get(k, {}).get(s) for s in KIND_STATS} for k in m.kinds}
    ch = m.stats.get("churn")
    if ch is None and m.parent is not None and run.store.has_version(m.parent):
        ch = churn(run.store.read(m.parent), run.store.read(version)).summary()
    return VersionInfo(
        version=version,
        parent=m.parent,
        created=m.created,
        kinds=m.kinds,
        stats=stats,
        churn=ch,
        source=m.stats.get("source"),
        update=m.stats.get("update"),
        degenerate_maps=m.stats.get("degenerate_maps"),
        mined_level=(m.stats.get("mined_level") or {}).get("name"),
    )


def read_json(path: Path) -> Any:
    """The parsed JSON file, or None when it does not exist."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); delete it and re-run `joindet eval` to rewrite it"
        ) from None


def read_proposals(metrics_dir: Path) -> list[dict[str, Any]]:
    """Every ``proposals-epoch-*.json`` result, sorted by (split, epoch)."""
    if not metrics_dir.is_dir():
        return []
    found = [read_json(p) for p in sorted(metrics_dir.glob("proposals-epoch-*.json"))]
    return sorted((r for r in found if r), key=lambda r: (str(r.get("split")), int(r.get("epoch", -1))))


def read_train_log(path: Path) -> list[dict[str, Any]]:
    """Records of ``train.jsonl`` in epoch order; a line cut short by a kill is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "epoch" in rec:
            records.append(rec)
    return sorted(records, key=lambda r: int(r["epoch"]))


def stage_timings(
    run_created: str | None,
    versions: list[VersionInfo],
    log: list[dict[str, Any]],
    flow_started: str | None = None,
) -> list[Timing]:
    """Durations per stage in schedule order (see the module docstring for how each is derived).

    ``flow_started`` (``RUN/logs/flow-start.json``): when it falls between run.json's creation and
    v0's, the time before it is the orchestrator's start (Prefect's temporary server), shown on
    its own line and not counted as init time."""
    out: list[Timing] = []
    created = {v.version: _time(v.created) for v in versions}
    if 0 in created and run_created:
        start, started = _time(run_created), _time(flow_started)
        if started is not None and start is not None and created[0] is not None and start <= started <= created[0]:
            out.append(
                Timing(
                    "flow start (Prefect server, flow run)",
                    _seconds(start, started),
                    "derived: run.json created -> logs/flow-start.json",
                )
            )
            start = started
        out.append(
            Timing(
                "init_priors v0000",
                _seconds(start, created[0]),
                "derived: flow started (or run.json created) -> v0000 manifest created",
            )
        )
    epoch_end = {int(r["epoch"]): _time(r.get("time")) for r in log}
    for rec in log:
        e = int(rec["epoch"])
        out.append(Timing(f"train epoch {e}", _float(rec.get("seconds")), "recorded: train.jsonl seconds"))
        if e + 1 in created and e + 1 != 0:
            out.append(
                Timing(
                    f"mine + smooth v{e + 1:04d}",
                    _seconds(epoch_end.get(e), created[e + 1]),
                    f"derived: epoch {e} logged -> v{e + 1:04d} manifest created",
                )
            )
    return out


def _time(text: Any) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None


def _seconds(start: _dt.datetime | None, end: _dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 1)


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None
