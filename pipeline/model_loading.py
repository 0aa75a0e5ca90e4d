"""Models for inference (mining, R_0, proposals evaluation), cached once per process.

Mining shards may run in Dask worker processes: each worker loads a checkpoint once and keeps
it for every shard it is given. The cache key includes the process id (a forked child must not
reuse its parent's tensors) and the file's size and mtime (a rewritten checkpoint is reloaded).

The device and the thread count of inference are this module's too: ``resolve_device("auto")``
names the CUDA device the process was placed on (``pipeline.distributed.place_worker``), and
:func:`fixed_threads` holds torch's intra-op thread count at :data:`INFERENCE_THREADS` while a
shard is computed, because CPU kernels round differently with another thread count (a Dask
worker starts with ``OMP_NUM_THREADS=1``, a thread pool with one thread per core).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from joindet.detector import build_model
from joindet.pipeline.checkpoints import file_digest as file_digest  # re-exported: the owner is checkpoints
from joindet.pipeline.checkpoints import load_model_state
from joindet.pipeline.config import RunConfig

_CACHE: dict[tuple[Any, ...], torch.nn.Module] = {}
_CACHE_MUTEX = threading.Lock()
#: models kept per process; mining needs one checkpoint at a time, evaluation perhaps a second.
_CACHE_SIZE = 2


#: torch intra-op threads while a shard is mined (or R_0 computed): fixed, so that the same shard
#: gives the same boxes on every runner. Parallelism comes from shards running side by side.
INFERENCE_THREADS = 1


def shard_meta(cfg: RunConfig, ids: np.ndarray) -> dict[str, Any]:
    """Marker fields every shard computation (init, mine) records: the image range (int64 ids in
    index order), the source, batch size, device, and who computed it (host, pid, thread count:
    a shard's boxes do not depend on who, as threads are fixed, but a debugger asks)."""
    return {
        "first_image_id": int(ids[0]) if len(ids) else None,
        "last_image_id": int(ids[-1]) if len(ids) else None,
        "num_images": len(ids),
        "source": cfg.priors.source,
        "batch_size": cfg.mine.batch_size,
        "device": str(resolve_device(cfg.mine.device)),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": INFERENCE_THREADS,
    }


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda:<current device>`` when CUDA is available, else cpu; anything else is
    passed to torch.device. A Dask worker placed on GPU k (``pipeline.distributed.place_worker``)
    has k as its current device, so ``auto`` mines there rather than on ``cuda:0``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    return torch.device(name)


_THREADS_MUTEX = threading.Lock()
_THREADS_STATE: dict[str, int] = {"depth": 0, "saved": 0}


@contextlib.contextmanager
def fixed_threads(threads: int = INFERENCE_THREADS) -> Iterator[int]:
    """Hold ``torch.set_num_threads(threads)`` for the block (yields the count).

    The setting is process-wide: shards mined on several threads of one process at once share
    it, so the first block to enter sets it and the last one to leave restores the old value.
    """
    with _THREADS_MUTEX:
        if _THREADS_STATE["depth"] == 0:
            _THREADS_STATE["saved"] = torch.get_num_threads()
            torch.set_num_threads(threads)
        _THREADS_STATE["depth"] += 1
    try:
        yield torch.get_num_threads()
    finally:
        with _THREADS_MUTEX:
            _THREADS_STATE["depth"] -= 1
            if _THREADS_STATE["depth"] == 0:
                torch.set_num_threads(_THREADS_STATE["saved"])


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


def clear_cache() -> None:
    with _CACHE_MUTEX:
        _CACHE.clear()


# ---------------------------------------------------------------------- internals
def _build_initial(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    # The same seed as training's model build: R_0 and training see the same (random) backbone.
    torch.manual_seed(cfg.train.seed)
    # No warning here (Dask workers build it too): init_priors warns once per run.
    model = build_model(cfg.model, warn_random_backbone=False)
    return model.to(device).eval()


def _build_from_checkpoint(cfg: RunConfig, path: Path, device: torch.device) -> torch.nn.Module:
    # Every weight comes from the checkpoint: skip loading backbone files and the warning about
    # their absence.
    state = load_model_state(path)
    # A finetune run's checkpoints classify its C categories + background: build that head (the
    # class-agnostic proposals score 1 - p(background) whatever the number of classes).
    head = state.get("class_embed.weight")
    num_classes = int(head.shape[0]) if head is not None and head.ndim == 2 else cfg.model.num_classes
    mcfg = cfg.model.with_(backbone_weights=None, num_classes=num_classes)
    model = build_model(mcfg, warn_random_backbone=False)
    # Training keeps the frozen backbone inside the model's state dict, so the checkpoint alone
    # reproduces the model; strict loading catches a checkpoint of another preset early.
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ValueError(
            f"checkpoint {path} does not fit the run's model (preset {cfg.preset!r}): {state_mismatch(model, state)}"
        ) from None
    return model.to(device).eval()


def state_mismatch(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    """One sentence on how ``state`` differs from ``model``'s state dict (counts and a first
    example of weights of another shape, missing and unexpected), instead of torch's many lines."""
    own = model.state_dict()
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} weights of another shape (e.g. {k}: {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        )
    if missing:
        parts.append(f"{len(missing)} missing weights (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weights (e.g. {unexpected[0]})")
    return (", ".join(parts) or "the weights differ") + "; was it written by another preset?"


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
