"""Pipeline stages: init_priors, mine, smooth, train, evaluate, finetune."""

from joindet.pipeline.stages.evaluate import coco_metrics, evaluate_priors, evaluate_proposals
from joindet.pipeline.stages.init_priors import commit_init, init_priors, init_shard
from joindet.pipeline.stages.mine import mine, mine_shard
from joindet.pipeline.stages.result import ShardResult, StageResult
from joindet.pipeline.stages.smooth import smooth

__all__ = [
    "StageResult",
    "ShardResult",
    "init_priors",
    "init_shard",
    "commit_init",
    "mine",
    "mine_shard",
    "smooth",
    "evaluate_priors",
    "evaluate_proposals",
    "coco_metrics",
]

from joindet.pipeline.stages.finetune import finetune
from joindet.pipeline.stages.train import train

__all__ += ["train", "finetune"]
