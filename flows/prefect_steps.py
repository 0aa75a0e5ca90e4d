"""The pretrain flow's steps as Prefect tasks: states, task runs and artifacts show in the UI.

Init and mining map ``init_shard_task`` / ``mine_shard_task`` over the flow's task runner
(threads, or Dask processes that receive only the run path, version and shard id); the commit of
each version runs in the flow's process. Training runs in the flow's process, under
torchrun as its child, or as torchrun agents inside the Dask workers (``train_on_workers``). Progress bars follow the shards only on the
thread runner, where the progress object lives in the same process.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from prefect import unmapped
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner

from joindet.flows import tasks
from joindet.flows.reports import version_table
from joindet.pipeline.config import RunConfig
from joindet.pipeline.flow_state import record_flow_start
from joindet.pipeline.pretrain import VersionReport
from joindet.pipeline.progress import NULL_PROGRESS, Progress
from joindet.pipeline.run_dir import RunDir


def artifact_key(run: RunDir, version: int) -> str:
    """``<run-name>-<8 hex of the run's absolute path>-v0002``: unique per run (two runs in folders
    of the same name differ by the path digest), in the lowercase letters, digits and dashes that
    Prefect artifact keys allow."""
    return f"{run_key(run.path)}-v{version:04d}"


def run_key(path: str | Path) -> str:
    """``<folder name>-<8 hex of the absolute path>``: the per-run prefix of artifact keys."""
    name = re.sub(r"[^a-z0-9-]+", "-", Path(path).name.lower()).strip("-") or "run"
    return f"{name}-{hashlib.sha256(str(Path(path).absolute()).encode()).hexdigest()[:8]}"


def run_labels(run: RunDir) -> dict[str, Any]:
    """The resolved configuration's main fields, as the flow run's ``config`` parameter in the UI."""
    cfg = run.config
    return {
        "run_dir": str(run.path),
        "dataset": cfg.data.dataset,
        "preset": cfg.preset,
        "source": cfg.priors.source,
        "update": cfg.priors.update,
        "epochs": cfg.schedule.epochs,
        "update_every": cfg.schedule.update_every,
    }


def run_tags(run: RunDir) -> list[str]:
    """Flow run tags to filter runs by in the UI: ``dataset:coco``, ``preset:tiny``, ``source:...``, ``update:...``."""
    labels = run_labels(run)
    return [f"{key}:{labels[key]}" for key in ("dataset", "preset", "source", "update")]


def finetune_labels(path: str | Path, cfg: RunConfig, init_checkpoint: str | None) -> dict[str, Any]:
    """A finetune run's main fields, as its flow run's parameter ``labels`` (its parameter
    ``config`` is the whole resolved configuration): dataset, preset and epochs as for pretrain,
    and its own (subset fraction and seed, the pretrained checkpoint, the lr drop)."""
    from joindet.pipeline.finetune_plan import finetune_schedule

    epochs, lr_drop = finetune_schedule(cfg)
    return {
        "run_dir": str(path),
        "dataset": cfg.data.dataset,
        "preset": cfg.preset,
        "init": init_checkpoint,
        "fraction": cfg.finetune.fraction,
        "seed": cfg.finetune.seed,
        "epochs": epochs,
        "lr_drop": lr_drop,
    }


def finetune_tags(cfg: RunConfig, init_checkpoint: str | None) -> list[str]:
    """Flow run tags of a finetune: ``dataset:``, ``preset:`` as for pretrain, ``fraction:`` and
    ``init:`` (the pretrain run's folder name, ``none`` for the backbone-only baseline)."""
    init = Path(init_checkpoint).absolute().parent.parent.name if init_checkpoint else "none"
    return [
        f"dataset:{cfg.data.dataset}",
        f"preset:{cfg.preset}",
        f"fraction:{cfg.finetune.fraction:g}",
        f"init:{init}",
    ]


def label_flow_run(run: RunDir) -> str | None:
    """Give the current flow run the run's tags (``run_tags``) and its main configuration fields
    as the parameter ``config`` (``run_labels``), so that the UI shows what ran, and record when
    the flow began (``RUN/logs/flow-start.json``); returns the flow run's UI link
    (``flow_run_link``). Outside a flow run: nothing, None."""
    if FlowRunContext.get() is None:
        return None
    record_flow_start(run.path, "prefect")  # the report counts the server's start apart from init
    return label_current_flow_run(run_tags(run), run_labels(run))


def label_current_flow_run(tags: list[str], fields: dict[str, Any], parameter: str = "config") -> str | None:
    """Add ``tags`` to the current flow run and ``fields`` as its parameter ``parameter``; returns
    its UI link (``flow_run_link``). Outside a flow run: nothing, None."""
    from prefect.client.orchestration import get_client

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    flow_run = ctx.flow_run
    with get_client(sync_client=True) as client:
        client.update_flow_run(
            flow_run.id,
            tags=sorted(set(flow_run.tags or []) | set(tags)),
            parameters={**(flow_run.parameters or {}), parameter: fields},
        )
    return flow_run_link(flow_run.id)


def flow_run_link(flow_run_id: Any) -> str | None:
    """The flow run's page in the Prefect UI when a server is configured (``PREFECT_API_URL``;
    the temporary server of a plain run is gone when the command ends: None)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if not settings.api.url or not settings.ui_url or flow_run_id is None:
        return None
    return f"{settings.ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


class PrefectSteps:
    """Each stage a Prefect task of the current flow run."""

    def __init__(
        self,
        progress: Progress = NULL_PROGRESS,
        nproc_per_node: int = 1,
        nnodes: int = 1,
        train_on_workers: bool = False,
    ) -> None:
        self.progress = progress
        self.nproc_per_node = nproc_per_node
        self.nnodes = nnodes
        self.train_on_workers = train_on_workers

    def init_shards(self, run: RunDir, shard_ids: list[int]) -> list[Any]:
        futures = tasks.init_shard_task.map(unmapped(str(run.path)), shard_ids, unmapped(self._shard_progress()))
        return [f.result() for f in futures]

    def init(self, run: RunDir) -> Any:
        return tasks.init_priors_task(run, progress=self.progress)

    def train(self, run: RunDir, end_epoch: int) -> Any:
        if self.train_on_workers:
            return tasks.train_cluster_task(str(run.path), end_epoch, self.nnodes, self.nproc_per_node)
        if self.nproc_per_node > 1:
            return tasks.train_torchrun_task(str(run.path), end_epoch, self.nproc_per_node)
        return tasks.train_task(run, end_epoch, progress=self.progress)

    def mine(self, run: RunDir, version: int, shard_ids: list[int]) -> list[Any]:
        progress = self._shard_progress()
        futures = tasks.mine_shard_task.map(unmapped(str(run.path)), unmapped(version), shard_ids, unmapped(progress))
        return [f.result() for f in futures]

    def _shard_progress(self) -> Progress | None:
        """The progress bars for shard tasks on the thread runner (same process); None on Dask,
        whose workers cannot draw here."""
        ctx = FlowRunContext.get()
        in_process = ctx is None or isinstance(ctx.task_runner, ThreadPoolTaskRunner)
        return self.progress if in_process else None

    def smooth(self, run: RunDir, version: int) -> Any:
        return tasks.smooth_task(run, version, progress=self.progress)

    def evaluate(self, run: RunDir, version: int) -> dict:
        return tasks.evaluate_priors_task(run, version)

    def publish(self, run: RunDir, report: VersionReport) -> None:
        table = version_table(report.version, report.statistics, report.metrics)
        if not table:
            return
        create_table_artifact(
            table=table,
            key=artifact_key(run, report.version),
            description=f"Prior version v{report.version:04d} of {run.path}: statistics and, with ground truth, AR/AP.",
        )
