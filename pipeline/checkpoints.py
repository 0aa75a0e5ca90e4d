"""Training checkpoints: ``RUN/checkpoints/epoch-NNNN.pt``, written atomically, loaded safely.

A checkpoint holds everything needed to continue training exactly where it stopped: the model,
optimizer, LR scheduler and AMP grad-scaler state dicts, the RNG states of python, numpy, torch and
CUDA, the epoch it closes, the prior version that epoch trained on and the run's config digest.

Every value is a tensor or a plain python type so that ``torch.load(..., weights_only=True)``
reads it: numpy's RNG key is stored as an int64 tensor, python's state as nested tuples of ints.
Files are written to a temporary name in the same directory and moved into place with
``os.replace``; then the checkpoint's marker ``epoch-NNNN.json`` (its sha256, size, epoch, prior
version and config digest) is written atomically beside it. A checkpoint exists when its marker
does (a ``.pt`` without one is an unfinished write, retrained); every load checks the file against
its marker and refuses a mismatch, naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the schedule and `runs status` read only names
    import torch

#: Bumped when the layout of the checkpoint dict changes incompatibly.
CHECKPOINT_FORMAT = 1

_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")


#: (path, size, mtime_ns) -> sha256 hex of checkpoint files hashed in this process.
_HASHES: dict[tuple[str, int, int], str] = {}
_HASH_MUTEX = threading.Lock()


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, damaged or not a joindet checkpoint, or that
    cannot be written; the message names the file and the fix."""


def checkpoint_name(epoch: int) -> str:
    """File name of the checkpoint closing ``epoch`` (0-based): ``epoch-0007.pt``."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return f"epoch-{epoch:04d}.pt"


def marker_path(path: str | os.PathLike) -> Path:
    """The marker of checkpoint ``path``: ``epoch-0007.pt`` -> ``epoch-0007.json`` beside it."""
    return Path(path).with_suffix(".json")


def _epoch_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


def list_epochs(ckpt_dir: str | os.PathLike) -> list[int]:
    """Sorted epochs that have a committed checkpoint in ``ckpt_dir``: a marker ``epoch-NNNN.json``
    (a ``.pt`` without its marker is an unfinished write; temp files are ignored). Names only:
    :func:`verified_epochs` also checks the files."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(e for p in d.glob("epoch-*.json") if (e := _epoch_of(p.with_suffix(".pt"))) is not None)


def latest_epoch(ckpt_dir: str | os.PathLike) -> int | None:
    """The highest epoch with a committed checkpoint (marker) in ``ckpt_dir``, or None."""
    epochs = list_epochs(ckpt_dir)
    return epochs[-1] if epochs else None


def verified_epochs(ckpt_dir: str | os.PathLike) -> list[int]:
    """Sorted epochs whose checkpoint file exists and matches its marker (size and sha256)."""
    d = Path(ckpt_dir)
    return [e for e in list_epochs(d) if checkpoint_problem(d / checkpoint_name(e)) is None]


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of checkpoint ``path`` (``sha256``, ``bytes``, ``epoch``, ``prior_version``,
    ``config_digest``), or None when there is none or it does not parse."""
    try:
        marker = json.loads(marker_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("sha256"), str) else None


def _retrain_hint(path: Path) -> str:
    epoch = _epoch_of(path)
    if epoch is None:
        return f"delete {path} and its marker, or use another checkpoint"
    return f"delete it (and any later epoch-*.pt) to retrain epoch {epoch}"


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex of a file, computed once per file version (path, size, mtime) in this process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    with _HASH_MUTEX:
        if key in _HASHES:
            return _HASHES[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    with _HASH_MUTEX:
        _HASHES[key] = h.hexdigest()
    return h.hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file (a manifest's ``checkpoint_digest``, a shard's ``mined by``),
    computed once per file version in this process; reads no tensor (no torch import)."""
    return f"sha256:{file_sha256(path)}"


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """None when checkpoint ``path`` exists and matches its marker; else one sentence naming the
    file and the fix."""
    path = Path(path)
    marker = read_marker(path)
    if marker is None:
        if marker_path(path).exists():
            return f"checkpoint marker {marker_path(path)} does not parse; {_retrain_hint(path)} and its marker"
        if path.exists():
            return (
                f"checkpoint {path} has no marker {marker_path(path).name} (an unfinished write); {_retrain_hint(path)}"
            )
        return f"checkpoint {path} does not exist; train first or pass an existing epoch-NNNN.pt"
    if not path.is_file():
        return (
            f"checkpoint {path} is missing (its marker {marker_path(path).name} remains); delete the marker "
            f"to retrain epoch {marker.get('epoch')}"
        )
    size = path.stat().st_size
    if size != marker.get("bytes"):
        return (
            f"checkpoint {path} is damaged ({size} bytes, its marker says {marker.get('bytes')}); {_retrain_hint(path)}"
        )
    if file_sha256(path) != marker["sha256"]:
        return f"checkpoint {path} is damaged (its sha256 differs from {marker_path(path).name}); {_retrain_hint(path)}"
    return None


def check_checkpoint(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` with :func:`checkpoint_problem`'s sentence unless ``path`` verifies."""
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(problem)


def config_disagreements(ckpt_dir: str | os.PathLike, config_digest: str) -> list[int]:
    """Epochs whose checkpoint marker records another config digest than ``config_digest``."""
    d = Path(ckpt_dir)
    out = []
    for e in list_epochs(d):
        marker = read_marker(d / checkpoint_name(e))
        if marker is not None and marker.get("config_digest") not in (None, config_digest):
            out.append(e)
    return out


# ---------------------------------------------------------------------------- retention
def epochs_to_prune(epochs: list[int], keep_last: int, needed: set[int] | frozenset[int]) -> list[int]:
    """Epochs whose checkpoint retention removes: all but the newest ``keep_last`` and ``needed``
    (those a prior version is mined with). ``keep_last`` 0 keeps every checkpoint."""
    if keep_last <= 0:
        return []
    keep = set(sorted(epochs)[-keep_last:]) | set(needed)
    return sorted(e for e in epochs if e not in keep)


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep_last: int, needed: set[int] | frozenset[int]) -> list[Path]:
    """Delete the checkpoints :func:`epochs_to_prune` names (the marker first: a ``.pt`` left
    without one by a crash is an unfinished write, never counted); returns the deleted paths.
    Call from the one process that writes checkpoints."""
    d = Path(ckpt_dir)
    removed = []
    for epoch in epochs_to_prune(list_epochs(d), keep_last, needed):
        path = d / checkpoint_name(epoch)
        marker_path(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


# ---------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """RNG states of python, numpy (legacy global), torch CPU and every CUDA device, as plain types."""
    import torch

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
    import torch

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
    """Write a checkpoint atomically (temp file in the same directory, fsync, ``os.replace``),
    then its marker (sha256, bytes, epoch, prior version, config digest), also atomically.

    ``model`` may be DDP-wrapped; its underlying module's state dict is stored (no ``module.``
    prefix). ``extra`` holds plain-typed facts of the caller (e.g. finetune category ids).
    Returns the final path. A failed write (disk full, permission denied) raises
    :class:`CheckpointError` naming the file and leaves no partial file or marker.
    """
    import torch

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
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getbuffer()
    marker = {
        "format": CHECKPOINT_FORMAT,
        "file": path.name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "epoch": int(epoch),
        "prior_version": payload["prior_version"],
        "config_digest": str(config_digest),
    }
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # The old marker goes first: a crash between the two renames leaves a .pt without marker
        # (an unfinished write, retrained), never a marker describing other bytes.
        marker_path(path).unlink(missing_ok=True)
        os.replace(tmp, path)
        tmp = None
        _write_atomic(marker_path(path), json.dumps(marker, indent=2, sort_keys=True).encode())
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if not marker_path(path).exists():
            path.unlink(missing_ok=True)
        reason = exc.strerror or type(exc).__name__
        raise CheckpointError(
            f"cannot write checkpoint {path} ({reason}); free space on (or fix the permissions of) "
            f"{path.parent} and run the same command again to retrain epoch {epoch}"
        ) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _torch_load(path: Path, data: bytes, map_location: str | torch.device) -> Any:
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} cannot be loaded as weights only: it is not a torch file, or it holds objects other "
            "than tensors and plain values (joindet never runs code from a file); use a checkpoint written "
            "by joindet or a plain state_dict"
        ) from None
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            f"{_retrain_hint(path)}"
        ) from None


def _read_verified(path: Path, require_marker: bool) -> bytes:
    """The file's bytes, checked against its marker (required, or checked only when present)."""
    marker = read_marker(path)
    if marker is None and (require_marker or marker_path(path).exists()):
        check_checkpoint(path)  # raises with the sentence for this case
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train first or pass an existing epoch-NNNN.pt")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror}); check its permissions") from None
    if marker is not None and (
        len(data) != marker.get("bytes") or hashlib.sha256(data).hexdigest() != marker["sha256"]
    ):
        raise CheckpointError(
            f"checkpoint {path} is damaged (its sha256 differs from {marker_path(path).name}); {_retrain_hint(path)}"
        )
    return data


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``, after
    checking it against its marker (size and sha256).

    Raises :class:`CheckpointError` naming the file and the fix when it is missing, damaged,
    unreadable or of another format.
    """
    path = Path(path)
    ckpt = _torch_load(path, _read_verified(path, require_marker=True), map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path} is not a joindet checkpoint (no 'model' entry)")
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {ckpt.get('format')!r}, this joindet reads format {CHECKPOINT_FORMAT}"
        )
    return ckpt


def load_model_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint, for inference (mining, evaluation, finetune init).

    Accepts a joindet checkpoint or a bare state dict; a DDP ``module.`` prefix is stripped. A file
    with a marker is checked against it; a run's ``checkpoints/epoch-NNNN.pt`` must have one.
    """
    import torch

    path = Path(path)
    in_run = path.parent.name == "checkpoints" and _epoch_of(path) is not None
    obj = _torch_load(path, _read_verified(path, require_marker=in_run), map_location)
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
    "check_checkpoint",
    "checkpoint_name",
    "checkpoint_problem",
    "config_disagreements",
    "epochs_to_prune",
    "file_digest",
    "file_sha256",
    "latest_epoch",
    "list_epochs",
    "load_checkpoint",
    "load_model_state",
    "marker_path",
    "prune_checkpoints",
    "read_marker",
    "restore_rng",
    "restore_training_state",
    "save_checkpoint",
    "verified_epochs",
]
