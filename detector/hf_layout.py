"""Key layouts of other Deformable DETR code bases: pure state-dict renaming, no file I/O.

Two targets, both Deformable DETR one-stage without iterative box refinement, which is what
:class:`~joindet.detector.model.JoinDetModel` is:

- ``hf``: Hugging Face transformers' ``DeformableDetrForObjectDetection`` with its own ResNet
  backbone (``use_timm_backbone=False``). :func:`hf_config_fields` gives the arguments of its
  ``DeformableDetrConfig`` and ``ResNetConfig`` as plain dicts (this module never imports
  transformers); :func:`to_hf_state_dict` renames the weights.
- ``deformable-detr``: the reference implementation (fundamentalvision/Deformable-DETR), whose
  checkpoints DETReg's ``main.py --pretrain`` loads (``{"model": state_dict}``; it drops the
  ``class_embed`` keys and loads the rest with ``strict=False``). :func:`to_reference_state_dict`.

What has no counterpart: the embedding head f_emb (``emb_embed.*``) is left out of both layouts
(:data:`DROPPED_PREFIXES`). The class head f_cls is copied as is (``num_classes`` outputs, index
0 background under a softmax); both targets score with a per-class sigmoid, so a user finetuning
replaces it (``--num-labels K`` re-initialises it in the HF export).

Configurations these layouts cannot express are refused by :func:`layout_problems`, which names
each difference (e.g. the tiny preset's f_box hidden width 256 with ``d_model=64``: both targets
use ``d_model`` as the box head's hidden width).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from joindet.detector.presets import DetectorConfig

if TYPE_CHECKING:  # the mapping only renames; importing torch is left to the callers
    from torch import Tensor

#: the export formats of this module.
FORMATS = ("hf", "deformable-detr")

#: joindet keys with no counterpart in either layout (the embedding head f_emb).
DROPPED_PREFIXES = ("emb_embed.",)

#: GroupNorm groups of the input projections in both targets (joindet uses gcd(32, d_model)).
TARGET_GROUPS = 32

#: ResNet depth per stage, HF ``layer_type``, stage widths (outputs of layer1..layer4), by name.
_RESNETS: dict[str, tuple[tuple[int, int, int, int], str, tuple[int, int, int, int]]] = {
    "resnet18": ((2, 2, 2, 2), "basic", (64, 128, 256, 512)),
    "resnet34": ((3, 4, 6, 3), "basic", (64, 128, 256, 512)),
    "resnet50": ((3, 4, 6, 3), "bottleneck", (256, 512, 1024, 2048)),
}


def layout_problems(cfg: DetectorConfig, fmt: str) -> list[str]:
    """Why ``cfg``'s architecture cannot be written in layout ``fmt`` (empty list: it can).

    Each entry names the joindet setting and what the target requires.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    problems = []
    target = "transformers' DeformableDetr" if fmt == "hf" else "the reference Deformable-DETR"
    if cfg.head_hidden != cfg.d_model:
        problems.append(
            f"f_box hidden width head_hidden={cfg.head_hidden} differs from d_model={cfg.d_model}; "
            f"{target} builds its box MLP with d_model hidden units (pretrain with "
            f"--set model.head_hidden={cfg.d_model} to get an exportable model)"
        )
    if cfg.d_model % TARGET_GROUPS:
        problems.append(
            f"d_model={cfg.d_model} is not a multiple of {TARGET_GROUPS}; {target} normalises its "
            f"input projections with GroupNorm({TARGET_GROUPS}, d_model)"
        )
    if cfg.num_feature_levels == 2:
        problems.append(
            f"num_feature_levels=2 uses C4 and C5; {target} takes C3, C4 and C5 from the backbone whenever "
            "it has more than one level"
        )
    if fmt == "deformable-detr" and cfg.backbone != "resnet50" and cfg.num_feature_levels > 1:
        problems.append(
            f"backbone={cfg.backbone} with {cfg.num_feature_levels} levels; the reference code hard-codes "
            "ResNet-50's C3-C5 channels (512, 1024, 2048) for multi-scale models"
        )
    return problems


def check_layout(cfg: DetectorConfig, fmt: str) -> None:
    """Raise ``ValueError`` naming every difference when ``cfg`` cannot be exported as ``fmt``."""
    problems = layout_problems(cfg, fmt)
    if problems:
        raise ValueError(f"this detector cannot be exported as {fmt!r}: " + "; ".join(problems))


def hf_config_fields(cfg: DetectorConfig, num_labels: int) -> tuple[dict, dict]:
    """``(DeformableDetrConfig kwargs, ResNetConfig kwargs)`` describing ``cfg`` in transformers.

    No hub access: ``use_timm_backbone=False`` with a local ``ResNetConfig`` and
    ``use_pretrained_backbone=False`` (the weights come from the export). Custom CUDA kernels are
    disabled so the pure-PyTorch attention, the one joindet mirrors, runs everywhere.
    """
    check_layout(cfg, "hf")
    depths, layer_type, widths = _RESNETS[cfg.backbone]
    stages = ["stage2", "stage3", "stage4"] if cfg.num_feature_levels > 1 else ["stage4"]
    resnet = {
        "num_channels": 3,
        "embedding_size": 64,
        "hidden_sizes": list(widths),
        "depths": list(depths),
        "layer_type": layer_type,
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": False,
        "out_features": stages,
    }
    detr = {
        "use_timm_backbone": False,
        "backbone": None,
        "use_pretrained_backbone": False,
        "num_queries": cfg.num_queries,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.enc_layers,
        "decoder_layers": cfg.dec_layers,
        "encoder_attention_heads": cfg.n_heads,
        "decoder_attention_heads": cfg.n_heads,
        "encoder_ffn_dim": cfg.dim_feedforward,
        "decoder_ffn_dim": cfg.dim_feedforward,
        "encoder_n_points": cfg.n_points,
        "decoder_n_points": cfg.n_points,
        "num_feature_levels": cfg.num_feature_levels,
        "activation_function": "relu",
        "dropout": cfg.dropout,
        "attention_dropout": cfg.dropout,
        "activation_dropout": 0.0,
        "position_embedding_type": "sine",
        "with_box_refine": False,
        "two_stage": False,
        "auxiliary_loss": cfg.aux_loss,
        "disable_custom_kernels": True,
        "num_labels": num_labels,
    }
    return detr, resnet


# ---------------------------------------------------------------------- renaming rules
# (pattern on the joindet key, replacement) applied in order, first match wins.
_HF_STEM = {
    "backbone.body.conv1.": "model.backbone.model.embedder.embedder.convolution.",
    "backbone.body.bn1.": "model.backbone.model.embedder.embedder.normalization.",
}

_ENC = [
    (r"^attn\.", "self_attn."),
    (r"^norm\.", "{norm}."),
    (r"^ffn\.net\.0\.", "{fc1}."),
    (r"^ffn\.net\.3\.", "{fc2}."),
    (r"^ffn\.norm\.", "{final}."),
]


def _hf_backbone_key(key: str) -> str:
    """torchvision ResNet key -> transformers ResNetBackbone key (stem, blocks, shortcuts)."""
    for prefix, new in _HF_STEM.items():
        if key.startswith(prefix):
            return new + key.removeprefix(prefix)
    m = re.match(r"^backbone\.body\.layer(\d)\.(\d+)\.(.*)$", key)
    if not m:
        raise KeyError(key)
    stage, block, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
    head = f"model.backbone.model.encoder.stages.{stage}.layers.{block}."
    d = re.match(r"^downsample\.([01])\.(.*)$", rest)
    if d:
        return head + ("shortcut.convolution." if d.group(1) == "0" else "shortcut.normalization.") + d.group(2)
    c = re.match(r"^(conv|bn)(\d)\.(.*)$", rest)
    if not c:
        raise KeyError(key)
    part = "convolution." if c.group(1) == "conv" else "normalization."
    return head + f"layer.{int(c.group(2)) - 1}." + part + c.group(3)


def _layer_key(rest: str, names: dict[str, str], rules: list[tuple[str, str]]) -> str:
    for pattern, new in rules:
        if re.match(pattern, rest):
            return re.sub(pattern, new.format(**names), rest)
    raise KeyError(rest)


_HF_ENC_NAMES = {"norm": "self_attn_layer_norm", "fc1": "mlp.fc1", "fc2": "mlp.fc2", "final": "final_layer_norm"}
_REF_ENC_NAMES = {"norm": "norm1", "fc1": "linear1", "fc2": "linear2", "final": "norm2"}
_HF_DEC = [
    (r"^norm1\.", "self_attn_layer_norm."),
    (r"^cross_attn\.", "encoder_attn."),
    (r"^norm2\.", "encoder_attn_layer_norm."),
    (r"^ffn\.net\.0\.", "mlp.fc1."),
    (r"^ffn\.net\.3\.", "mlp.fc2."),
    (r"^ffn\.norm\.", "final_layer_norm."),
    (r"^self_attn\.out_proj\.", "self_attn.o_proj."),
]
# The reference's decoder layer calls its post-cross-attention norm ``norm1`` and the
# post-self-attention one ``norm2``: the opposite of joindet's order of use.
_REF_DEC = [
    (r"^norm1\.", "norm2."),
    (r"^norm2\.", "norm1."),
    (r"^ffn\.net\.0\.", "linear1."),
    (r"^ffn\.net\.3\.", "linear2."),
    (r"^ffn\.norm\.", "norm3."),
    (r"^(self_attn|cross_attn)\.", r"\1."),
]


def _dropped(key: str) -> bool:
    return key.startswith(DROPPED_PREFIXES)


#: the heads shared by all decoder layers in joindet; both targets keep one copy per decoder layer.
_HEADS = ("class_embed.", "bbox_embed.")


def _per_decoder_layer(key: str, value: Tensor, dec_layers: int) -> dict[str, Tensor]:
    """``class_embed.REST`` (or ``bbox_embed.REST``) -> ``class_embed.I.REST`` for each decoder
    layer I, all the same tensor (both targets tie or copy them)."""
    head, rest = key.split(".", 1)
    return {f"{head}.{i}.{rest}": value for i in range(dec_layers)}


def to_hf_state_dict(state: dict[str, Tensor], cfg: DetectorConfig) -> dict[str, Tensor]:
    """joindet ``state_dict`` -> ``DeformableDetrForObjectDetection`` keys (all of them but none
    of f_emb). The decoder self-attention's packed ``in_proj`` is split into q/k/v projections;
    the shared heads are written once per decoder layer (transformers ties them to layer 0).

    Raises ``KeyError`` on a joindet key this mapping does not know (a changed model).
    """
    check_layout(cfg, "hf")
    d = cfg.d_model
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if _dropped(key):
            continue
        if key.startswith("backbone."):
            out[_hf_backbone_key(key)] = value
        elif key.startswith("input_proj."):
            out["model." + key] = value
        elif key == "transformer.level_embed":
            out["model.level_embed"] = value
        elif key == "transformer.query_embed.weight":
            out["model.query_position_embeddings.weight"] = value
        elif key.startswith("transformer.reference_points."):
            out["model." + key.removeprefix("transformer.")] = value
        elif m := re.match(r"^transformer\.encoder\.(\d+)\.(.*)$", key):
            out[f"model.encoder.layers.{m.group(1)}." + _layer_key(m.group(2), _HF_ENC_NAMES, _ENC)] = value
        elif m := re.match(r"^transformer\.decoder\.(\d+)\.self_attn\.in_proj_(weight|bias)$", key):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.split(d, dim=0)):
                out[f"model.decoder.layers.{m.group(1)}.self_attn.{name}.{m.group(2)}"] = part.clone()
        elif m := re.match(r"^transformer\.decoder\.(\d+)\.(.*)$", key):
            rest = m.group(2)
            new = _layer_key(rest, {}, _HF_DEC) if not rest.startswith("self_attn.in_proj") else rest
            out[f"model.decoder.layers.{m.group(1)}.{new}"] = value
        elif key.startswith(_HEADS):
            out.update(_per_decoder_layer(key, value, cfg.dec_layers))
        else:
            raise KeyError(f"no transformers counterpart known for joindet key {key!r}")
    return out


def to_reference_state_dict(state: dict[str, Tensor], cfg: DetectorConfig) -> dict[str, Tensor]:
    """joindet ``state_dict`` -> the reference Deformable-DETR's ``DeformableDETR.state_dict()``
    keys (no box refinement, no two-stage): backbone under ``backbone.0.body.`` with torchvision
    names, transformer layers under ``transformer.{encoder,decoder}.layers.N``, per-layer copies
    of the shared heads ``class_embed.N`` / ``bbox_embed.N``, ``query_embed`` at the top.
    """
    check_layout(cfg, "deformable-detr")
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if _dropped(key):
            continue
        if key.startswith("backbone.body."):
            out["backbone.0." + key.removeprefix("backbone.")] = value
        elif key.startswith("input_proj.") or key in ("transformer.level_embed",):
            out[key] = value
        elif key == "transformer.query_embed.weight":
            out["query_embed.weight"] = value
        elif key.startswith("transformer.reference_points."):
            out[key] = value
        elif m := re.match(r"^transformer\.encoder\.(\d+)\.(.*)$", key):
            out[f"transformer.encoder.layers.{m.group(1)}." + _layer_key(m.group(2), _REF_ENC_NAMES, _ENC)] = value
        elif m := re.match(r"^transformer\.decoder\.(\d+)\.(.*)$", key):
            out[f"transformer.decoder.layers.{m.group(1)}." + _layer_key(m.group(2), {}, _REF_DEC)] = value
        elif key.startswith(_HEADS):
            out.update(_per_decoder_layer(key, value, cfg.dec_layers))
        else:
            raise KeyError(f"no reference Deformable-DETR counterpart known for joindet key {key!r}")
    return out


__all__ = [
    "FORMATS",
    "DROPPED_PREFIXES",
    "layout_problems",
    "check_layout",
    "hf_config_fields",
    "to_hf_state_dict",
    "to_reference_state_dict",
]
