"""torch.distributed for the train and finetune stages: process group, sampler, DDP, reductions.

Under torchrun (``python -m torch.distributed.run``) the environment holds ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
joins that process group (gloo on CPU, nccl on CUDA). Without them everything degrades to one
process: no group, no sampler, the model unwrapped, reductions the identity.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # True when init_distributed created the process group

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints and logs (rank 0)."""
        return self.rank == 0


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available here; set train.device=cpu or auto")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev


def launched_by_torchrun() -> bool:
    """True when the torchrun environment variables describe more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when there is one, and return this process's place.

    An already initialised group (set up by the caller) is reused. The backend is nccl for CUDA
    devices and gloo otherwise.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)
    if not launched_by_torchrun():
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, owns_group=True)


def shutdown(info: DistInfo, wait: bool = True) -> None:
    """Leave the process group if :func:`init_distributed` created it (a caller's group is kept).

    ``wait`` first meets every rank at a barrier, so that rank 0 (which hosts the group's
    TCPStore) does not leave while another rank still talks to it. Pass ``wait=False`` when
    leaving on an error, where the other ranks may never reach the barrier.
    """
    if info.owns_group and dist.is_initialized():
        # A DDP wrapper still alive (e.g. held by a reference cycle) would tear down its reducer
        # after the group is gone and abort the interpreter at exit ("terminate called without
        # an active exception").
        gc.collect()
        if wait:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def process_group(device: str = "auto") -> Iterator[DistInfo]:
    """:func:`init_distributed` on entry, :func:`shutdown` on exit (without the barrier when the
    body raised). The training stages run inside one."""
    info = init_distributed(device)
    try:
        yield info
    except BaseException:
        shutdown(info, wait=False)
        raise
    shutdown(info)


def make_sampler(dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True) -> DistributedSampler | None:
    """A DistributedSampler splitting ``dataset`` over ranks (``drop_last`` keeps steps equal); None alone.

    Call ``sampler.set_epoch(e)`` before each epoch so that every epoch is shuffled differently and
    identically on every rank.
    """
    if not info.distributed:
        return None
    return DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=True
    )


def wrap_model(model: torch.nn.Module, info: DistInfo, find_unused_parameters: bool = True) -> torch.nn.Module:
    """DDP around ``model`` when distributed (the model must already be on ``info.device``).

    ``find_unused_parameters`` stays on by default: heads whose loss is switched off (the
    embedding head in finetuning) get no gradient and would otherwise hang the reduction.
    """
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=ids, find_unused_parameters=find_unused_parameters
    )


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def all_reduce_sum(value: float, info: DistInfo) -> float:
    """Sum of ``value`` over ranks."""
    if not info.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device(info))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def all_reduce_mean_dict(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Mean of each named value over ranks (one collective for all keys, sorted for agreement)."""
    if not info.distributed or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device(info))
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= info.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (pickled: small plain objects only)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _comm_device(info: DistInfo) -> torch.device:
    # nccl only reduces CUDA tensors; gloo only CPU ones.
    return info.device if info.device.type == "cuda" else torch.device("cpu")


__all__ = [
    "DistInfo",
    "all_reduce_mean_dict",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "init_distributed",
    "launched_by_torchrun",
    "make_sampler",
    "process_group",
    "resolve_device",
    "shutdown",
    "unwrap",
    "wrap_model",
]
