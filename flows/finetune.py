"""The finetune flow: supervised training from a pretrained checkpoint, then COCO bbox AP.

One task around ``pipeline.stages.finetune`` (which resumes from its own last checkpoint) and a
Prefect table artifact with the final metrics. ``run_finetune`` is the same without Prefect.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from joindet.flows.reports import numeric_leaves
from joindet.pipeline import stages
from joindet.pipeline.config import RunConfig
from joindet.pipeline.progress import NULL_PROGRESS, Progress


def run_finetune(
    out_dir: str | Path, init_checkpoint: str | None, cfg: RunConfig, progress: Progress = NULL_PROGRESS
) -> dict[str, Any]:
    """Finetune into ``out_dir`` (created or resumed); returns ``StageResult.to_dict()``."""
    return stages.finetune(str(out_dir), init_checkpoint, cfg, progress=progress).to_dict()


@task(name="finetune", cache_policy=NO_CACHE, persist_result=False)
def finetune_task(out_dir: str, init_checkpoint: str | None, cfg: RunConfig, progress: Progress) -> dict[str, Any]:
    return run_finetune(out_dir, init_checkpoint, cfg, progress)


@flow(name="joindet-finetune", validate_parameters=False)
def finetune_flow(
    out_dir: str, init_checkpoint: str | None, config: dict[str, Any], quiet: bool = False
) -> dict[str, Any]:
    """Prefect flow: finetune ``config`` (``RunConfig.to_dict()``) into ``out_dir``; publishes its AP."""
    from joindet.flows.prefect_steps import finetune_labels, finetune_tags, label_current_flow_run
    from joindet.flows.progress_bars import RichProgress

    cfg = RunConfig.from_dict(config)
    # Tags and main fields as a pretrain flow run has, so that finetunes are found and told apart
    # in the UI; the main fields go to ``labels``: ``config`` already holds the whole config.
    tags, fields = finetune_tags(cfg, init_checkpoint), finetune_labels(out_dir, cfg, init_checkpoint)
    link = label_current_flow_run(tags, fields, parameter="labels")
    if link and not quiet:
        print(f"Prefect flow run: {link}", file=sys.stderr)
    result = finetune_task(out_dir, init_checkpoint, cfg, RichProgress(quiet=quiet))
    rows = [{"field": k, "value": v} for k, v in numeric_leaves(result.get("summary", {}).get("metrics", {})).items()]
    if rows:
        from joindet.flows.prefect_steps import run_key

        create_table_artifact(
            table=rows,
            key=f"{run_key(out_dir)}-finetune",
            description=f"Finetune metrics of {out_dir} (init {init_checkpoint}).",
        )
    return result
