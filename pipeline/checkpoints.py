"""Training checkpoints: ``RUN/checkpoints/epoch-NNNN.pt``, written atomically, loaded safely.

A checkpoint holds everything needed to continue training exactly where it stopped: the model,
optimizer, LR scheduler and AMP grad-scaler state dicts, the RNG states of python, numpy, torch and
CUDA, the epoch it closes, the prior version that epoch trained on and the run's config digest.

Every value is a tensor or a plain python type so that ``torch.load(..., weights_only=True)``
reads it: numpy's RNG key is stored as an int64 tensor, python's state as nested tuples of ints.
Files are written to a temporary name in the same directory and moved into place with
``os.replace``, so a crash leaves either the previous set of checkpoints or the complete new one.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Bumped when the layout of the checkpoint dict changes incompatibly.
CHECKPOINT_FORMAT = 1

_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable or not a joindet checkpoint."""


def checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint closing ``epoch`` (0-based): ``epoch-0007.pt``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return f"epoch-{epoch:04d}.pt"


def list_epochs(ckpt_dir: str | os.PathLike) -> list[int]:
    """Sorted epochs that have a checkpoint file in ``ckpt_dir`` (temp files ignored)."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for p in d.iterdir() if (m := _NAME.match(p.name)))


def latest_epoch(ckpt_dir: str | os.PathLike) -> int | None:
    """The highest epoch with a checkpoint in ``ckpt_dir``, or None when there is none."""
    epochs = list_epochs(ckpt_dir)
    return epochs[-1] if epochs else None


# ---------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """RNG states of python, numpy (legacy global), torch CPU and every CUDA device, as plain types."""
    version, py_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": (version, tuple(py_state), gauss),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
        "numpy_has_gauss": int(np_state["has_gauss"]),
        "numpy_gauss": float(np_state["gauss"]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNGs from :func:`capture_rng` output (CUDA states only where devices match)."""
    version, py_state, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in py_state), gauss))
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": int(state["numpy_pos"])},
            "has_gauss": int(state["numpy_has_gauss"]),
            "gauss": float(state["numpy_gauss"]),
        }
    )
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda])


# ---------------------------------------------------------------------------- save / load
def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    epoch: int,
    config_digest: str,
    prior_version: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same directory, fsync, ``os.replace``).

    ``model`` may be DDP-wrapped; its underlying module's state dict is stored (no ``module.``
    prefix). ``extra`` holds plain-typed facts of the caller (e.g. finetune category ids).
    Returns the final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = model.module if hasattr(model, "module") else model
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "prior_version": None if prior_version is None else int(prior_version),
        "config_digest": str(config_digest),
        "model": inner.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": capture_rng(),
        "extra": dict(extra or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable or of another
    format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first or pass an existing epoch-NNNN.pt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it to retrain that epoch"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a joindet checkpoint (no 'model' entry)")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {ckpt.get('format')!r}, this joindet reads format {CHECKPOINT_FORMAT}"
        )
    return ckpt


def load_model_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint, for inference (mining, evaluation, finetune init).

    Accepts a joindet checkpoint or a bare state dict; a DDP ``module.`` prefix is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first or pass an existing epoch-NNNN.pt")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no model state dict (expected a joindet checkpoint or a state_dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def restore_training_state(
    ckpt: dict[str, Any],
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    rng: bool = True,
) -> int:
    """Load every state of ``ckpt`` into the given objects; returns the next epoch to train."""
    inner = model.module if hasattr(model, "module") else model
    inner.load_state_dict(ckpt["model"])
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    if rng and ckpt.get("rng") is not None:
        restore_rng(ckpt["rng"])
    return int(ckpt["epoch"]) + 1


__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "capture_rng",
    "checkpoint_name",
    "latest_epoch",
    "list_epochs",
    "load_checkpoint",
    "load_model_state",
    "restore_rng",
    "restore_training_state",
    "save_checkpoint",
]
