"""Models for inference (mining, R_0, proposals evaluation), cached once per process.

Mining shards may run in Dask worker processes: each worker loads a checkpoint once and keeps
it for every shard it is given. The cache key includes the process id (a forked child must not
reuse its parent's tensors) and the file's size and mtime (a rewritten checkpoint is reloaded).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from joindet.detector import build_model
from joindet.pipeline.checkpoints import load_model_state
from joindet.pipeline.config import RunConfig

_CACHE: dict[tuple[Any, ...], torch.nn.Module] = {}
_CACHE_MUTEX = threading.Lock()
_DIGESTS: dict[tuple[str, int, int], str] = {}
#: models kept per process; mining needs one checkpoint at a time, evaluation perhaps a second.
_CACHE_SIZE = 2


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def initial_model(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """A freshly built model in eval mode with the configured backbone weights (for R_0).

    ``build_model`` loads ``model.backbone_weights`` when set. Only ``model.backbone_features``
    is meaningful here: the transformer is untrained.
    """
    files = [f for f in (cfg.model.backbone_weights,) if f]
    key = ("init", os.getpid(), cfg.digest(), *(_file_key(f) for f in files), str(device))
    return _cached(key, lambda: _build_initial(cfg, device))


def checkpoint_model(cfg: RunConfig, checkpoint: str | Path, device: torch.device) -> torch.nn.Module:
    """The model of a training checkpoint ``RUN/checkpoints/epoch-NNNN.pt`` in eval mode, on ``device``.

    Raises FileNotFoundError naming the checkpoint when it does not exist.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train the epochs before mining or evaluating them")
    key = ("ckpt", os.getpid(), cfg.digest(), _file_key(str(path)), str(device))
    return _cached(key, lambda: _build_from_checkpoint(cfg, path, device))


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file (the manifest's checkpoint_digest), computed once per file
    version (path, size, mtime) in this process: every shard of a version names the same file."""
    key = _file_key(str(path))
    with _CACHE_MUTEX:
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = _sha256(path)
    with _CACHE_MUTEX:
        _DIGESTS[key] = digest
    return digest


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def clear_cache() -> None:
    with _CACHE_MUTEX:
        _CACHE.clear()
        _DIGESTS.clear()


# ---------------------------------------------------------------------- internals
def _build_initial(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    # The same seed as training's model build: R_0 and training see the same (random) backbone.
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    return model.to(device).eval()


def _build_from_checkpoint(cfg: RunConfig, path: Path, device: torch.device) -> torch.nn.Module:
    # Every weight comes from the checkpoint: skip loading backbone files and the warning about
    # their absence.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = build_model(cfg.model.with_(backbone_weights=None))
    state = load_model_state(path)
    # Training keeps the frozen backbone inside the model's state dict, so the checkpoint alone
    # reproduces the model; strict loading catches a checkpoint of another preset early.
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {path} does not fit the run's model (preset {cfg.preset!r}): {str(exc).splitlines()[0]}"
        ) from None
    return model.to(device).eval()


def _cached(key: tuple[Any, ...], build: Any) -> torch.nn.Module:
    with _CACHE_MUTEX:
        model = _CACHE.get(key)
        if model is None:
            model = build()
            while len(_CACHE) >= _CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = model
        return model


def _file_key(path: str) -> tuple[str, int, int]:
    st = os.stat(path)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)
