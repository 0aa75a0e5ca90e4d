"""Exporting a pretrained checkpoint for other code bases: transformers (``hf``) and the reference
Deformable DETR (``deformable-detr``). Reads a run's checkpoint, writes one output directory.

``hf`` writes what ``DeformableDetrForObjectDetection.from_pretrained(DIR)`` and
``AutoImageProcessor.from_pretrained(DIR)`` load with no download: ``config.json`` (with its
ResNet backbone config, no timm, no hub), ``model.safetensors``, ``preprocessor_config.json``.
Weights left out on purpose, and so reported missing or absent by transformers:

- the embedding head f_emb (``emb_embed.*``): no counterpart in transformers;
- the class head ``class_embed.*`` when ``num_labels`` differs from the checkpoint's classes: the
  file holds transformers' own initialisation of a K-class head (``joindet_export.json`` lists it
  under ``reinitialised``), so it loads without warnings and is trained by the user.

With the default ``num_labels`` (the checkpoint's 2: index 0 background, 1 object) the class head
is copied as trained; joindet's foreground score of a query is then ``1 - softmax(logits)[..., 0]``
of the exported model's logits (transformers' post-processing scores a per-class sigmoid instead).

``deformable-detr`` writes ``DIR/checkpoint.pth`` = ``{"model": state_dict, "args": {...}}`` in the
reference key layout, for ``main.py --pretrain`` of DETReg-style code (which drops ``class_embed``).
Every export also writes ``DIR/joindet_export.json``: source run, epoch, checkpoint sha256, format,
what was left out.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from joindet.detector.hf_layout import (
    DROPPED_PREFIXES,
    FORMATS,
    check_layout,
    hf_config_fields,
    to_hf_state_dict,
    to_reference_state_dict,
)
from joindet.detector.presets import DetectorConfig
from joindet.pipeline.checkpoints import file_sha256, load_model_state
from joindet.pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from joindet.pipeline.run_dir import RunDir

#: name of the provenance file written beside every export.
EXPORT_INFO = "joindet_export.json"
#: the reference-layout checkpoint's file name inside the output directory.
REFERENCE_CHECKPOINT = "checkpoint.pth"


@dataclass
class ExportResult:
    """What an export wrote: ``files`` relative to ``out_dir``; ``left_out`` joindet key prefixes
    not written; ``reinitialised`` target key prefixes holding the target's own initialisation."""

    out_dir: str
    format: str
    epoch: int | None
    source: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_run(
    run_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    fmt: str,
    epoch: int | None = None,
    num_labels: int | None = None,
) -> ExportResult:
    """Export checkpoint ``epoch`` (None: the newest) of the run at ``run_path`` into ``out_dir``.

    Raises ``FileNotFoundError`` when the run has no such checkpoint and ``ValueError`` when the
    run's architecture cannot be written in ``fmt`` (naming each difference).
    """
    run = RunDir.open(run_path)
    if epoch is None:
        epoch = run.last_checkpoint()
        if epoch is None:
            raise FileNotFoundError(f"run {run.path} has no checkpoint yet; train it before exporting")
    path = run.checkpoint_path(epoch)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; `joindet runs status {run.path}` lists the epochs")
    cfg = run.config.model
    check_layout(cfg, fmt)
    state = load_model_state(path)
    source = {"run": str(run.path), "checkpoint": str(path), "sha256": file_sha256(path), "preset": run.config.preset}
    return export_state(state, cfg, out_dir, fmt, num_labels=num_labels, epoch=epoch, source=source)


def export_state(
    state: dict[str, torch.Tensor],
    cfg: DetectorConfig,
    out_dir: str | os.PathLike,
    fmt: str,
    num_labels: int | None = None,
    epoch: int | None = None,
    source: dict[str, Any] | None = None,
) -> ExportResult:
    """Export a joindet model ``state`` of architecture ``cfg`` into ``out_dir`` (created)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    check_layout(cfg, fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    left_out = sorted({p for p in DROPPED_PREFIXES if any(k.startswith(p) for k in state)})
    result = ExportResult(str(out), fmt, epoch, dict(source or {}), left_out=left_out)
    if fmt == "hf":
        _write_hf(state, cfg, out, num_labels if num_labels is not None else cfg.num_classes, result)
    else:
        if num_labels is not None and num_labels != cfg.num_classes:
            raise ValueError(
                "--num-labels applies to the hf format only; the reference code's --pretrain drops class_embed itself"
            )
        ref = to_reference_state_dict(state, cfg)
        torch.save({"model": ref, "args": _reference_args(cfg), "epoch": epoch}, out / REFERENCE_CHECKPOINT)
        result.files.append(REFERENCE_CHECKPOINT)
    (out / EXPORT_INFO).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    result.files.append(EXPORT_INFO)
    return result


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ValueError(
            "the hf export needs Hugging Face transformers: pip install 'joindet[hf]' (or pip install transformers)"
        ) from None
    return transformers


def _write_hf(
    state: dict[str, torch.Tensor], cfg: DetectorConfig, out: Path, num_labels: int, result: ExportResult
) -> None:
    tf = _transformers()
    if num_labels < 1:
        raise ValueError(f"--num-labels must be at least 1, got {num_labels}")
    detr_kwargs, resnet_kwargs = hf_config_fields(cfg, num_labels)
    if num_labels == cfg.num_classes == 2:
        detr_kwargs["id2label"] = {0: "background", 1: "object"}
        detr_kwargs["label2id"] = {"background": 0, "object": 1}
    config = tf.DeformableDetrConfig(backbone_config=tf.ResNetConfig(**resnet_kwargs), **detr_kwargs)
    mapped = to_hf_state_dict(state, cfg)
    reinit = num_labels != cfg.num_classes
    if reinit:
        mapped = {k: v for k, v in mapped.items() if not k.startswith("class_embed.")}
        result.reinitialised.append("class_embed.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = tf.DeformableDetrForObjectDetection(config)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    allowed = [k for k in missing if not (reinit and k.startswith("class_embed."))]
    if allowed or unexpected:
        raise ValueError(
            f"the installed transformers ({tf.__version__}) lays DeformableDetr out differently: "
            f"missing {allowed[:5]}, unexpected {list(unexpected)[:5]}"
        )
    # A re-initialised class head is saved as transformers initialised it (its focal-loss prior
    # bias): a head left out of the file makes from_pretrained report the tied copies as corrupt.
    model.save_pretrained(out)
    processor = tf.DeformableDetrImageProcessor(
        format="coco_detection",
        do_resize=True,
        size={"shortest_edge": cfg.test_size, "longest_edge": cfg.max_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[float(v) for v in IMAGENET_MEAN],
        image_std=[float(v) for v in IMAGENET_STD],
        do_pad=True,
    )
    processor.save_pretrained(out)
    result.files += sorted(p.name for p in out.iterdir() if p.name != EXPORT_INFO)


def _reference_args(cfg: DetectorConfig) -> dict[str, Any]:
    """The reference main.py arguments this architecture corresponds to (a plain dict)."""
    return {
        "backbone": cfg.backbone,
        "num_feature_levels": cfg.num_feature_levels,
        "hidden_dim": cfg.d_model,
        "enc_layers": cfg.enc_layers,
        "dec_layers": cfg.dec_layers,
        "nheads": cfg.n_heads,
        "enc_n_points": cfg.n_points,
        "dec_n_points": cfg.n_points,
        "dim_feedforward": cfg.dim_feedforward,
        "num_queries": cfg.num_queries,
        "with_box_refine": False,
        "two_stage": False,
        "dilation": False,
        "position_embedding": "sine",
    }


__all__ = ["EXPORT_INFO", "REFERENCE_CHECKPOINT", "ExportResult", "export_run", "export_state"]
