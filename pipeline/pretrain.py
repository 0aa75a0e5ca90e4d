"""The pretrain driver: ask the run plan what is left, run each step, record what happened.

``drive_pretrain(run, steps)`` is the whole pretraining loop without Prefect or click: init (the
shards of v0 the plan says are missing, then its commit), then
for each block of the schedule (``pipeline.schedule``) train, mine the shards the plan says are
missing, smooth, evaluate and publish. A re-run does only what the plan says is not done.
``steps`` says *how* each piece runs (``flows.pretrain.PlainSteps`` in this process,
``flows.prefect_steps.PrefectSteps`` as Prefect tasks on a task runner); it never decides *what*.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from joindet.pipeline.flow_state import clear_failure, step
from joindet.pipeline.run_dir import RunDir
from joindet.pipeline.schedule import RunPlan, quarantine_failures
from joindet.pipeline.tensorboard_log import log_version, version_pictures


class Steps(Protocol):
    """How the pretrain loop runs each stage; every method returns the stage's result.

    ``init_shards`` and ``mine`` compute shards (``stages.init_shard`` / ``stages.mine_shard``,
    each on its own when the runner allows); ``init`` commits v0 from its staged shards
    (``stages.commit_init``), ``smooth`` commits a mined version.
    """

    def init_shards(self, run: RunDir, shard_ids: list[int]) -> list[Any]: ...

    def init(self, run: RunDir) -> Any: ...

    def train(self, run: RunDir, end_epoch: int) -> Any: ...

    def mine(self, run: RunDir, version: int, shard_ids: list[int]) -> list[Any]: ...

    def smooth(self, run: RunDir, version: int) -> Any: ...

    def evaluate(self, run: RunDir, version: int) -> dict: ...

    def publish(self, run: RunDir, report: VersionReport) -> None: ...


@dataclass
class VersionReport:
    """What the flow did for one prior version (``mined``/``reused``: shard ids)."""

    version: int
    committed_now: bool
    mined: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class PretrainReport:
    """The outcome of one pretrain flow run (JSON-able through ``to_dict``)."""

    run: str
    versions: list[VersionReport] = field(default_factory=list)
    trained_to: int | None = None  # epoch of the last checkpoint
    train_skipped: list[int] = field(default_factory=list)  # block end epochs already trained
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_ground_truth(run: RunDir) -> bool:
    """True when the run's dataset carries boxes to evaluate priors against."""
    try:
        return run.dataset().coco_ground_truth() is not None
    except (OSError, ValueError):
        return False


def _summary(result: Any) -> dict[str, Any]:
    return dict(getattr(result, "summary", None) or {})


def _publish(run: RunDir, steps: Steps, report: VersionReport, evaluate: bool) -> None:
    if evaluate:
        with step(run.path, f"evaluate v{report.version:04d}"):
            report.metrics = steps.evaluate(run, report.version) or {}
    if run.config.train.tensorboard:
        pictures = version_pictures(run, report.version)
        log_version(run.path, report.version, report.statistics, report.metrics, pictures)
    steps.publish(run, report)


def drive_pretrain(run: RunDir, steps: Steps, evaluate: bool | None = None) -> PretrainReport:
    """Run (or resume) the whole pretraining schedule of ``run`` with ``steps``.

    ``evaluate``: evaluate each new version against ground truth (None: when ``eval.priors`` is
    set and the dataset has it). It runs in line, between smoothing and the next training block:
    on its default sample (``eval.sample_images``) it costs seconds to a minute per version at
    COCO scale (``benchmarks/bench_scale.py``), small beside a training block.
    The caller holds the run's writer lock.
    """
    t0 = time.perf_counter()
    plan = RunPlan(run)
    if evaluate is None:
        evaluate = run.config.eval.priors and has_ground_truth(run)
    report = PretrainReport(run=str(run.path))

    if run.config.model.backbone_pretrain:  # self-supervised backbone weights, before anything reads them
        from joindet.pipeline.ssl.stage import backbone_pretrain_pending, pretrain_run_backbone

        if backbone_pretrain_pending(run):
            with step(run.path, "backbone pretrain"):
                pretrain_run_backbone(run, getattr(steps, "progress", None))

    v0 = VersionReport(version=0, committed_now=0 not in plan.committed())
    with step(run.path, "init v0000"):
        if v0.committed_now:
            # Before the shards (they may run on Dask workers, which do not warn); init_priors'
            # warning comes from the same line, so it shows once.
            from joindet.detector.model import random_backbone_warning  # torch: not at import

            random_backbone_warning(run.config.model)
            # Failed images stay in the shard markers until the commit quarantines them: init's
            # shard plan leaves the quarantine out, so it must not change under staged shards.
            v0.mined = plan.missing_shards(0)
            v0.reused = [s for s in range(run.config.mine.shards) if s not in v0.mined]
            if v0.mined:
                steps.init_shards(run, v0.mined)
        v0.statistics = _summary(steps.init(run))
    if v0.committed_now:
        _publish(run, steps, v0, evaluate)
    report.versions.append(v0)

    for block in plan.blocks:
        if plan.block_trained(block):
            report.train_skipped.append(block.end)
        else:
            with step(run.path, f"train epochs {block.start}-{block.end - 1}"):
                steps.train(run, block.end)
        if block.version is None:
            break
        version = block.version
        vr = VersionReport(version=version, committed_now=version not in plan.committed())
        if vr.committed_now:
            vr.mined = plan.missing_shards(version)
            vr.reused = [s for s in range(run.config.mine.shards) if s not in vr.mined]
            with step(run.path, f"mine v{version:04d}"):
                results = steps.mine(run, version, vr.mined) if vr.mined else []
            quarantine_failures(run, [row for r in results for row in (getattr(r, "failed", None) or [])])
            with step(run.path, f"smooth v{version:04d}"):
                vr.statistics = _summary(steps.smooth(run, version))
            _publish(run, steps, vr, evaluate)
        report.versions.append(vr)

    clear_failure(run.path)
    report.trained_to = plan.last_checkpoint()
    report.quarantined = run.quarantine().to_pylist()
    report.seconds = round(time.perf_counter() - t0, 2)
    return report
