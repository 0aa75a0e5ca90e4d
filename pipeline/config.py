"""Run configuration: dataclasses, named presets, ``key=value`` overrides, resolved JSON.

A run's configuration is resolved once (preset, then dataset-dependent defaults, then the user's
``--set`` overrides) and written into ``RUN/run.json``; every later stage reads it from there.
Only ``build_*`` factories and the stages read individual fields.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from joindet.detector.presets import DetectorConfig, get_preset
from joindet.priors.smooth import IOU_THR, MOMENTUM
from joindet.priors.updates import STRATEGIES as UPDATE_STRATEGIES

#: priors.source -> the staged kinds that make up a version's current priors. The paper's
#: variants (Table 5: region+instance, region, instance, predictions, region0) and the baselines
#: (random_crops, selective_search = DETReg's priors); docs/ablations.md names each.
SOURCE_KINDS: dict[str, tuple[str, ...]] = {
    "region+instance": ("region", "instance"),
    "region": ("region",),
    "instance": ("instance",),
    "predictions": ("instance",),
    "region0": ("region",),
    "random_crops": ("region",),
    "selective_search": ("region",),
}
PRIOR_SOURCES = tuple(SOURCE_KINDS)
#: Sources mined by running the detector (the others need no checkpoint).
MODEL_SOURCES = ("region+instance", "region", "instance", "predictions")
INIT_FEATURES = ("backbone", "colour")


class ConfigError(ValueError):
    """A configuration value or override that cannot be applied."""


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    root: str | None = None  # None: $JOINDET_DATA or the dataset's default location
    annotations: str | None = None  # coco-json only
    split: str = "train"  # pretraining split
    eval_split: str = "val"  # ground truth for proposals evaluation
    class_list: str | None = None  # imagenet subsets (e.g. ImageNet-100)


@dataclass
class PriorsConfig:
    source: str = "region+instance"
    update: str = "box_smooth"
    momentum: float = MOMENTUM  # m_s: weight of the previous priors in Box Smooth
    iou_thr: float = IOU_THR
    min_score: float = 0.05  # smoothed priors below this score are dropped
    max_per_image: int | None = 30
    tau: float = 0.2  # affinity threshold of the eigen attention
    eps: float = 1e-5
    instance_t: float = 0.5  # IG: share of foreground mask cells inside a predicted box
    instance_min_score: float | None = None  # IG: None = argmax is foreground (paper); else min fg probability
    connectivity: int = 4
    min_cells: int = 1
    max_region_boxes: int | None = 10
    random_crops: int = 30  # random_crops source: boxes per image
    # Features of R_0: "backbone" (frozen backbone C5, the paper) or "colour" (weight-free
    # colour/texture tokens, for runs without pretrained backbone weights; see priors/colour_tokens.py).
    init_features: str = "backbone"
    init_stride: int = 8  # cell side in pixels of the colour tokens
    centre_tokens: bool = False  # mining: subtract each map's mean encoder token before the cut


@dataclass
class ScheduleConfig:
    epochs: int = 50
    update_every: int = 10  # blocks, versions and what is done: pipeline/schedule.py


@dataclass
class TrainConfig:
    batch_size: int = 4
    num_workers: int = 2
    seed: int = 0
    copy_paste: bool = False  # paste small prior boxes (paper Table 7)
    jitter: tuple[float, float] = (0.1, 2.0)  # large-scale jittering: scale range of the target size
    max_images: int | None = None  # cap per epoch (debugging); None: the whole dataset
    device: str = "auto"  # auto: cuda when present
    tensorboard: bool = False  # event files under RUN/tensorboard/ (pipeline/tensorboard_log.py)
    # Checkpoints kept: the newest N plus those a committed version was mined with or a staged
    # one is mined with (pipeline/checkpoints.py, prune_checkpoints); 0 keeps every one.
    keep_checkpoints: int = 2


@dataclass
class MineConfig:
    batch_size: int = 8
    shards: int = 4
    save_attention: bool = True
    device: str = "auto"


@dataclass
class EvalConfig:
    top_k: int = 100
    # Prior evaluation: a fixed random sample of the split ("all": every image), drawn once with
    # sample_seed so every version is scored on the same images; priors=false skips it.
    sample_images: str = "5000"
    sample_seed: int = 0
    priors: bool = True


@dataclass
class FinetuneConfig:
    """Supervised finetuning as DETReg does it (pipeline/stages/finetune.py, docs/ablations.md)."""

    fraction: float = 1.0
    seed: int = 42  # low-data subset: default_rng(seed) (seeds 42, 43, 44 for mean and spread)
    # 0: DETReg's schedule for the fraction (1 %: 2000 epochs, 10 %: 400, full: 50 with the lr
    # dropped at 40), times epoch_scale, rounded up (finetune_schedule); > 0: these epochs.
    epochs: int = 0
    lr_drop: int = 0  # 0: DETReg's drop for the fraction (scaled), or no drop when epochs is given
    epoch_scale: float = 1.0  # the tiny preset uses 0.01
    lr: float = 2e-4
    lr_backbone: float = 2e-5
    train_backbone: bool = True  # DETReg trains the backbone when finetuning
    augment: str = "detr"  # detr (DETR's flip/resize/crop) | jitter (pretraining's large-scale jittering)
    top_k: int = 100  # detections per image: the best (query, class) pairs


@dataclass
class RunConfig:
    preset: str = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    model: DetectorConfig = field(default_factory=lambda: get_preset("tiny"))
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    mine: MineConfig = field(default_factory=MineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _from_dict(cls, data, "")

    def digest(self) -> str:
        """sha256 of the settings that change results (not workers, devices or batch sizes of mining)."""
        d = self.to_dict()
        for dotted in RESUME_SAFE_KEYS:
            section, key = dotted.split(".")
            d.get(section, {}).pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def validate(self) -> RunConfig:
        if self.priors.source not in PRIOR_SOURCES:
            raise ConfigError(f"priors.source={self.priors.source!r}; choose one of {', '.join(PRIOR_SOURCES)}")
        if self.priors.update not in UPDATE_STRATEGIES:
            raise ConfigError(f"priors.update={self.priors.update!r}; choose one of {', '.join(UPDATE_STRATEGIES)}")
        if not 0.0 <= self.priors.momentum <= 1.0:
            raise ConfigError(f"priors.momentum={self.priors.momentum} must lie in [0, 1]")
        if self.priors.init_features not in INIT_FEATURES:
            raise ConfigError(
                f"priors.init_features={self.priors.init_features!r}; choose one of {', '.join(INIT_FEATURES)}"
            )
        if self.train.keep_checkpoints < 0:
            raise ConfigError(f"train.keep_checkpoints={self.train.keep_checkpoints} must be 0 (keep all) or more")
        if self.schedule.epochs < 1 or self.schedule.update_every < 1:
            raise ConfigError("schedule.epochs and schedule.update_every must be at least 1")
        if self.mine.shards < 1:
            raise ConfigError("mine.shards must be at least 1")
        sample = str(self.eval.sample_images).strip().lower()
        if sample != "all" and not (sample.isdigit() and int(sample) > 0):
            raise ConfigError(
                f"eval.sample_images={self.eval.sample_images!r}: give a positive number of images or 'all'"
            )
        if not 0.0 < self.finetune.fraction <= 1.0:
            raise ConfigError(f"finetune.fraction={self.finetune.fraction} must lie in (0, 1]")
        if self.finetune.augment not in ("detr", "jitter"):
            raise ConfigError(f"finetune.augment={self.finetune.augment!r}; choose detr or jitter")
        if self.finetune.epochs < 0 or self.finetune.lr_drop < 0 or self.finetune.epoch_scale <= 0:
            raise ConfigError("finetune.epochs and finetune.lr_drop must be >= 0 and finetune.epoch_scale > 0")
        return self


#: Settings that may change between a run and its resume without changing its results.
RESUME_SAFE_KEYS = (
    "train.num_workers",
    "train.device",
    "train.tensorboard",
    "train.keep_checkpoints",
    "mine.batch_size",
    "mine.device",
    "mine.shards",
    "mine.save_attention",
    "eval.sample_images",
    "eval.sample_seed",
    "eval.priors",
)

#: Run presets: the detector preset of the same name plus schedule and batch settings.
RUN_PRESETS = ("tiny", "paper", "paper-single-scale")


def make_config(
    preset: str = "tiny", dataset: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RunConfig:
    """Resolve a run configuration: preset, dataset-dependent defaults, then ``key=value`` overrides."""
    if preset not in RUN_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(RUN_PRESETS)}")
    cfg = RunConfig(preset=preset, model=get_preset(preset))
    if dataset is not None:
        cfg.data.dataset = dataset
    if preset == "tiny":
        # Three blocks of two epochs: R_0, then two update rounds (v2, v4).
        cfg.schedule = ScheduleConfig(epochs=6, update_every=2)
        cfg.train.batch_size = 4
        cfg.mine = MineConfig(batch_size=8, shards=2, save_attention=True)
        cfg.priors.max_per_image = 20
        # No pretrained weights can be downloaded for the CPU demo and tests, and a random
        # backbone's C5 tokens are all alike: R_0 comes from colour/texture tokens instead.
        cfg.priors.init_features = "colour"
        # A detector trained for minutes with the focal loss rarely calls a query foreground by
        # argmax (p > 0.5): IG keeps queries above 0.3 instead (docs/ablations.md).
        cfg.priors.instance_min_score = 0.3
        # 160 px images: shrinking them to 0.1x leaves objects of a few pixels to learn from.
        cfg.train.jitter = (0.8, 1.2)
        # DETReg's finetune epochs x 0.01 on CPU (1 %: 20, 10 %: 4, full: 1; docs/ablations.md).
        cfg.finetune.epoch_scale = 0.01
    elif cfg.data.dataset == "imagenet":
        # ImageNet: 5 epochs, priors updated every epoch (paper, section 4.1).
        cfg.schedule = ScheduleConfig(epochs=5, update_every=1)
    if cfg.data.dataset == "voc":
        cfg.data.split, cfg.data.eval_split = "trainval", "test"
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: RunConfig, overrides: list[str] | tuple[str, ...]) -> RunConfig:
    """Apply ``section.key=value`` strings in place (values parsed by the field's type)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value (e.g. priors.momentum=0.5)")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        chain: list[Any] = [cfg]
        for name in parts[:-1]:
            if not dataclasses.is_dataclass(chain[-1]) or name not in _field_names(chain[-1]):
                known = ", ".join(_field_names(chain[-1])) if dataclasses.is_dataclass(chain[-1]) else "-"
                raise ConfigError(f"unknown config section {name!r} (in {dotted!r}); sections: {known}")
            chain.append(getattr(chain[-1], name))
        target, key = chain[-1], parts[-1]
        if not dataclasses.is_dataclass(target) or key not in _field_names(target):
            raise ConfigError(
                f"unknown config key {dotted!r}; keys of this section: {', '.join(_field_names(target)) if dataclasses.is_dataclass(target) else '-'}"
            )
        hint = typing.get_type_hints(type(target))[key]
        value = _parse(raw.strip(), hint, dotted)
        _assign(chain, parts, value)
    return cfg.validate()


def _assign(chain: list[Any], parts: list[str], value: Any) -> None:
    """Set ``chain[-1].<parts[-1]> = value``.

    Frozen sections (the detector's config) are rebuilt with ``dataclasses.replace`` and the new
    object is assigned to their parent, up to the first mutable section.
    """
    for obj, name in zip(reversed(chain), reversed(parts)):
        if type(obj).__dataclass_params__.frozen:
            value = dataclasses.replace(obj, **{name: value})
            continue
        setattr(obj, name, value)
        return


def _field_names(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _parse(raw: str, hint: Any, dotted: str) -> Any:
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    if optional and raw.lower() in ("none", "null", ""):
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        hint, origin = args[0], typing.get_origin(args[0])
    try:
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return raw
        if origin in (tuple, list):
            item = typing.get_args(hint)[0] if typing.get_args(hint) else str
            values = [_parse(v.strip(), item, dotted) for v in raw.strip("()[]").split(",") if v.strip()]
            return tuple(values) if origin is tuple else values
    except ValueError:
        raise ConfigError(f"cannot read {raw!r} as {getattr(hint, '__name__', hint)} for {dotted}") from None
    return json.loads(raw)


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = _from_dict(hint, value, f"{where}{f.name}.")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"unknown config keys {', '.join(sorted(where + u for u in unknown))} in run.json")
    return cls(**kwargs)
