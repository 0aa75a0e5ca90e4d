"""Loading backbone weights from a local file (torchvision, SwAV or DINO layout) and saving or
restoring whole-model weights. The only file I/O of ``detector``."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

#: prefixes that wrappers add around a ResNet's own key names (DDP, DINO's MultiCropWrapper, DETR).
_PREFIXES = ("module.", "backbone.", "body.", "0.body.")
#: keys of heads that checkpoints carry but a backbone does not have.
_HEAD_KEYS = ("fc.", "projection_head.", "prototypes.", "head.")


class WeightsError(ValueError):
    """A weights file that cannot be loaded into the backbone."""


@dataclass(frozen=True)
class LoadReport:
    """Outcome of :func:`load_backbone_weights`.

    ``missing``: backbone keys the file did not provide (left at their current values);
    ``unexpected``: file keys that match no backbone key (ignored); ``dropped``: head keys
    (classifier, SwAV projection head/prototypes, DINO head) that were discarded on purpose.
    """

    missing: list[str]
    unexpected: list[str]
    dropped: list[str]


def _extract_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("teacher", "state_dict", "model"):  # DINO full checkpoints: prefer the teacher
            if key in obj and isinstance(obj[key], dict):
                return _extract_state_dict(obj[key], path)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise WeightsError(
        f"{path}: no tensors found; expected a torchvision/SwAV/DINO ResNet state_dict "
        "(optionally under 'state_dict', 'model' or 'teacher')."
    )


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _body_of(model_or_backbone: nn.Module) -> nn.Module:
    """The torchvision ResNet inside a JoinDetModel or Backbone (or the module itself)."""
    module = model_or_backbone
    if hasattr(module, "backbone"):
        module = module.backbone
    if hasattr(module, "body"):
        module = module.body
    return module


def _safe_load(path: str, what: str) -> object:
    """``torch.load(path, weights_only=True)``; every failure is one :class:`WeightsError` naming
    the file and the fix (never torch's advice to set ``weights_only=False``, which would run code
    from the file)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"{what} {path} cannot be loaded as weights only: it is not a torch file, or it holds objects "
            "other than tensors and plain values (joindet never runs code from a file). Use a plain "
            "state_dict (torch.save(model.state_dict(), ...))."
        ) from None
    except OSError as exc:
        raise WeightsError(
            f"{what} {path} cannot be read ({exc.strerror or exc}); check the path and its permissions."
        ) from None
    except Exception as exc:  # truncated zip, foreign format: torch raises many types
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise WeightsError(
            f"{what} {path} is not a readable torch weights file ({type(exc).__name__}: {first[:160]}); "
            "download it again or point at another file."
        ) from None


def load_backbone_weights(model_or_backbone: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Load ResNet weights from ``path`` into the backbone of a model (in place).

    Accepts a torchvision ``state_dict``, a SwAV checkpoint (``module.`` prefixes, possibly under
    ``state_dict``; ``projection_head``/``prototypes`` dropped) and a DINO ResNet-50 checkpoint
    (a plain backbone dict, or ``teacher``/``student`` dicts with ``module.backbone.`` prefixes;
    the teacher is used). Raises :class:`WeightsError` when the file is missing, holds no ResNet
    keys, or a tensor's shape differs from the backbone's (e.g. ResNet-50 weights into ResNet-18).
    """
    path = str(path)
    if not Path(path).is_file():
        raise WeightsError(f"backbone weights file {path} does not exist; set backbone_weights to a local file.")
    obj = _safe_load(path, "backbone weights file")
    raw = _extract_state_dict(obj, path)
    body = _body_of(model_or_backbone)
    own = body.state_dict()

    state, dropped, unexpected = {}, [], []
    for key, value in raw.items():
        name = _strip(key)
        if name.startswith(_HEAD_KEYS) or name.endswith("num_batches_tracked"):
            dropped.append(key)
        elif name in own:
            state[name] = value
        else:
            unexpected.append(key)
    if not state:
        raise WeightsError(
            f"{path}: none of its {len(raw)} keys is a ResNet backbone key (e.g. {next(iter(raw))!r}); "
            "use a torchvision, SwAV or DINO ResNet checkpoint."
        )
    for name, value in state.items():
        if tuple(value.shape) != tuple(own[name].shape):
            arch = getattr(getattr(model_or_backbone, "backbone", model_or_backbone), "name", "ResNet")
            raise WeightsError(
                f"{path} does not fit the {arch} backbone: {name!r} has shape {tuple(value.shape)} "
                f"in the file but {tuple(own[name].shape)} in the model; use weights of the same "
                "ResNet depth or change the backbone setting."
            )
    missing = sorted(set(own) - set(state))
    body.load_state_dict(state, strict=False)
    return LoadReport(missing=missing, unexpected=sorted(unexpected), dropped=sorted(dropped))


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Save ``model.state_dict()`` (tensors only, loadable with ``weights_only=True``)."""
    torch.save(model.state_dict(), str(path))


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a file written by :func:`save_weights` into ``model`` (strict: same architecture)."""
    state = _safe_load(str(path), "weights file")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not match this detector configuration: {exc}") from None
