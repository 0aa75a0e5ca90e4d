"""Backbone pretraining as the pretrain flow's first step (``--set model.backbone_pretrain=true``).

When a run asks for it and gives no weights, :func:`plan_backbone_pretrain` points
``model.backbone_weights`` at ``RUN/backbone/<method>-<arch>.pth`` before the run is created, so
run.json names the file every stage loads; :func:`backbone_pretrain_pending` says whether that
file still has to be trained, and :func:`pretrain_run_backbone` trains it on the run's own images
(resumable per epoch, ``pipeline.ssl.train``) and records the outcome under ``backbone_pretrain``
in run.json. A run given weights (``model.backbone_weights`` set by the user) never trains.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from joindet.pipeline.config import ConfigError, RunConfig
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RUN_JSON, RunDir
from joindet.pipeline.stages.result import StageResult

if TYPE_CHECKING:
    from joindet.pipeline.ssl.train import SSLSettings

#: folder of the run that holds self-supervised backbone weights.
BACKBONE_DIR = "backbone"
#: key of run.json recording the backbone pretraining.
RUN_JSON_KEY = "backbone_pretrain"


def planned_weights(run_path: str | os.PathLike[str], cfg: RunConfig) -> Path:
    """``RUN/backbone/<method>-<arch>.pth`` (absolute)."""
    m = cfg.model
    return Path(run_path).absolute() / BACKBONE_DIR / f"{m.backbone_pretrain_method}-{m.backbone}.pth"


def plan_backbone_pretrain(cfg: RunConfig, run_path: str | os.PathLike[str]) -> RunConfig:
    """With ``model.backbone_pretrain`` and no ``model.backbone_weights``, set the weights to
    :func:`planned_weights` (in place; returns ``cfg``). Otherwise ``cfg`` is unchanged."""
    if cfg.model.backbone_pretrain and not cfg.model.backbone_weights:
        cfg.model = cfg.model.with_(backbone_weights=str(planned_weights(run_path, cfg)))
    return cfg


def _is_planned(run: RunDir) -> bool:
    weights = run.config.model.backbone_weights
    return bool(weights) and Path(weights) == planned_weights(run.path, run.config)


def backbone_pretrain_pending(run: RunDir) -> bool:
    """True when the run asks for backbone pretraining and its planned weights are not written yet.

    Raises ConfigError when ``model.backbone_pretrain`` is set but the weights were never planned
    (a run created without :func:`plan_backbone_pretrain`).
    """
    m = run.config.model
    if not m.backbone_pretrain:
        return False
    if not m.backbone_weights:
        raise ConfigError(
            "model.backbone_pretrain=true but model.backbone_weights is not set: create the run with "
            "`joindet flow run pretrain` (or call pipeline.ssl.stage.plan_backbone_pretrain before RunDir.create)."
        )
    return _is_planned(run) and not Path(m.backbone_weights).is_file()


def stage_settings(cfg: RunConfig) -> SSLSettings:
    """The run's SSL settings: method, epochs and crop size from ``model.backbone_pretrain_*``,
    the backbone's depth, the training seed and device."""
    from joindet.pipeline.ssl.train import SSLSettings

    m = cfg.model
    return SSLSettings(
        method=m.backbone_pretrain_method,
        arch=m.backbone,
        epochs=m.backbone_pretrain_epochs,
        size=m.backbone_pretrain_size,
        seed=cfg.train.seed,
        device=cfg.train.device,
    )


def pretrain_run_backbone(run: RunDir, progress: Progress | None = NULL_PROGRESS) -> StageResult:
    """Train the run's planned backbone weights (skipped when written) and record them in run.json."""
    from joindet.pipeline.ssl.train import pretrain_backbone, state_path

    progress = progress or NULL_PROGRESS
    if not backbone_pretrain_pending(run):
        return StageResult("backbone_pretrain", True, dict(run.info.get(RUN_JSON_KEY) or {}))
    out = Path(run.config.model.backbone_weights)
    settings = stage_settings(run.config)
    with run.lock():
        resumed = state_path(out).exists()
        result = pretrain_backbone(run.dataset(), out, settings, progress)
        summary: dict[str, Any] = {**result.summary(), "method": settings.method, "arch": settings.arch}
        summary["size"], summary["state_resumed"] = settings.size, resumed
        _record(run, summary)
    return StageResult("backbone_pretrain", False, summary)


def _record(run: RunDir, summary: dict[str, Any]) -> None:
    """Add ``backbone_pretrain: summary`` to run.json (atomically; the rest is kept as is)."""
    path = run.path / RUN_JSON
    info = json.loads(path.read_text(encoding="utf-8"))
    info[RUN_JSON_KEY] = summary
    tmp = path.with_name(f".{RUN_JSON}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    run.info[RUN_JSON_KEY] = summary
