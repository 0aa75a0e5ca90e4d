"""The pretrain flow: init priors, then per block train -> mine (sharded) -> smooth -> evaluate.

``drive_pretrain(run, steps)`` is the flow's logic without Prefect: it walks the schedule
(``cfg.schedule.blocks()``) and asks the run's store what is already there (a committed version,
the staged shards of a version, the last checkpoint) so a re-run does only what is missing.
``steps`` says how each piece runs: :class:`PlainSteps` calls the stages in this process (mining
shards on a thread pool); :class:`flows.prefect_steps.PrefectSteps` runs them as Prefect tasks on
the chosen task runner. The Prefect flow itself is ``pretrain_flow`` below.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from prefect import flow

from pipeline import stages
from pipeline.progress import NULL_PROGRESS, Progress
from pipeline.run_dir import RunDir
from flows.flow_state import clear_failure, step
from flows.reports import version_table


class Steps(Protocol):
    """How the pretrain flow runs each stage; every method returns the stage's result."""

    def init(self, run: RunDir) -> Any: ...

    def train(self, run: RunDir, end_epoch: int) -> Any: ...

    def mine(self, run: RunDir, version: int, shard_ids: list[int]) -> list[Any]: ...

    def smooth(self, run: RunDir, version: int) -> Any: ...

    def evaluate(self, run: RunDir, version: int) -> dict: ...

    def publish(self, run: RunDir, version: int, table: list[dict[str, Any]]) -> None: ...


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


def _summary(result: Any) -> dict[str, Any]:
    return dict(getattr(result, "summary", None) or {})


def has_ground_truth(run: RunDir) -> bool:
    """True when the run's dataset carries boxes to evaluate priors against."""
    try:
        return run.dataset().coco_ground_truth() is not None
    except (OSError, ValueError):
        return False


def _publish_version(run: RunDir, steps: Steps, report: VersionReport, evaluate: bool) -> None:
    if evaluate:
        with step(run.path, f"evaluate v{report.version:04d}"):
            report.metrics = steps.evaluate(run, report.version) or {}
    steps.publish(run, report.version, version_table(report.version, report.statistics, report.metrics))


def drive_pretrain(run: RunDir, steps: Steps, evaluate: bool | None = None) -> PretrainReport:
    """Run (or resume) the whole pretraining schedule of ``run`` with ``steps``.

    ``evaluate``: evaluate each new version against ground truth (None: when the dataset has it).
    The caller holds the run's writer lock.
    """
    t0 = time.perf_counter()
    cfg = run.config
    if evaluate is None:
        evaluate = has_ground_truth(run)
    report = PretrainReport(run=str(run.path))

    v0 = VersionReport(version=0, committed_now=0 not in run.store.versions())
    with step(run.path, "init v0000"):
        v0.statistics = _summary(steps.init(run))
    if v0.committed_now:
        _publish_version(run, steps, v0, evaluate)
    report.versions.append(v0)

    blocks = cfg.schedule.blocks()
    for k, (start, end) in enumerate(blocks):
        last = run.last_checkpoint()
        if last is not None and last >= end - 1:
            report.train_skipped.append(end)
        else:
            with step(run.path, f"train epochs {start}-{end - 1}"):
                steps.train(run, end)
        if k == len(blocks) - 1:
            break
        version = end
        vr = VersionReport(version=version, committed_now=version not in run.store.versions())
        if vr.committed_now:
            done = run.done_shards(version)
            vr.reused = sorted(s for s in range(cfg.mine.shards) if s in done)
            vr.mined = [s for s in range(cfg.mine.shards) if s not in done]
            with step(run.path, f"mine v{version:04d}"):
                results = steps.mine(run, version, vr.mined) if vr.mined else []
            failed = [row for r in results for row in (getattr(r, "failed", None) or [])]
            if failed:
                with run.lock():
                    run.add_quarantine([tuple(row) for row in failed])
            with step(run.path, f"smooth v{version:04d}"):
                vr.statistics = _summary(steps.smooth(run, version))
            _publish_version(run, steps, vr, evaluate)
        report.versions.append(vr)

    clear_failure(run.path)
    report.trained_to = run.last_checkpoint()
    report.quarantined = run.quarantine().to_pylist()
    report.seconds = round(time.perf_counter() - t0, 2)
    return report


class PlainSteps:
    """The stages called directly in this process; mining shards on ``threads`` threads.

    ``nproc_per_node > 1`` trains under torchrun (a child process group), as the Prefect flow does.
    """

    def __init__(self, progress: Progress = NULL_PROGRESS, threads: int = 1, nproc_per_node: int = 1) -> None:
        self.progress = progress
        self.threads = max(1, threads)
        self.nproc_per_node = nproc_per_node

    def init(self, run: RunDir) -> Any:
        return stages.init_priors(run, progress=self.progress)

    def train(self, run: RunDir, end_epoch: int) -> Any:
        if self.nproc_per_node > 1:
            from flows.torchrun import run_torchrun

            run_torchrun(run.path, end_epoch, self.nproc_per_node)
            return None
        return stages.train(run, end_epoch, progress=self.progress)

    def mine(self, run: RunDir, version: int, shard_ids: list[int]) -> list[Any]:
        def one(shard_id: int) -> Any:
            return stages.mine_shard(str(run.path), version, shard_id, progress=self.progress)

        if self.threads == 1 or len(shard_ids) == 1:
            return [one(s) for s in shard_ids]
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            return list(pool.map(one, shard_ids))

    def smooth(self, run: RunDir, version: int) -> Any:
        return stages.smooth(run, version, progress=self.progress)

    def evaluate(self, run: RunDir, version: int) -> dict:
        return stages.evaluate_priors(run, versions=[version])

    def publish(self, run: RunDir, version: int, table: list[dict[str, Any]]) -> None:
        pass


@flow(name="joindet-pretrain", validate_parameters=False)
def pretrain_flow(run_path: str, nproc_per_node: int = 1, quiet: bool = False, lock_held: bool = False) -> dict[str, Any]:
    """Prefect flow: pretrain (or resume) the run at ``run_path``; returns ``PretrainReport.to_dict()``.

    ``lock_held``: the caller (the CLI) already holds the run's writer lock; otherwise the flow
    takes it for its whole duration. The task runner is chosen with ``pretrain_flow.with_options``.
    """
    from flows.prefect_steps import PrefectSteps
    from flows.progress_bars import RichProgress

    run = RunDir.open(run_path)
    steps = PrefectSteps(progress=RichProgress(quiet=quiet), nproc_per_node=nproc_per_node)
    if lock_held:
        return drive_pretrain(run, steps).to_dict()
    with run.lock():
        return drive_pretrain(run, steps).to_dict()
