"""Pipeline stages: init_priors, mine, smooth, train, evaluate, finetune."""

from pipeline.stages.evaluate import coco_metrics, evaluate_priors, evaluate_proposals
from pipeline.stages.init_priors import init_priors
from pipeline.stages.mine import mine, mine_shard
from pipeline.stages.result import ShardResult, StageResult
from pipeline.stages.smooth import smooth

__all__ = [
    "StageResult", "ShardResult", "init_priors", "mine", "mine_shard", "smooth",
    "evaluate_priors", "evaluate_proposals", "coco_metrics",
]

from pipeline.stages.finetune import finetune
from pipeline.stages.train import train

__all__ += ["train", "finetune"]
