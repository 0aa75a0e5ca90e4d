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


def worker_local_index(name: object) -> int:
    """The index of a Dask worker among the workers of its host, from the worker's name.

    A LocalCluster names its workers 0, 1, ...; ``dask worker --nworkers G --name JOB`` (what
    dask-jobqueue starts per job) names them ``JOB-0`` ... ``JOB-{G-1}``: the trailing integer.
    A name without one is index 0.
    """
    if isinstance(name, int):
        return name
    tail = str(name).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def worker_device(worker_index: int, visible_gpus: int) -> str:
    """The device a worker computes on: ``cuda:<worker_index mod visible_gpus>``, ``cpu`` without GPUs.

    ``visible_gpus`` counts the GPUs this worker process sees (``torch.cuda.device_count()``,
    after ``CUDA_VISIBLE_DEVICES``). The G workers of a G-GPU host (indices 0..G-1) get G
    different GPUs; a worker that sees a single GPU (dask-cuda pins each worker that way) uses
    it. Callers refuse more workers than GPUs per host (:func:`check_workers_fit`), so no two
    workers share a GPU.
    """
    if worker_index < 0:
        raise ValueError(f"worker index {worker_index} must be >= 0")
    if visible_gpus <= 0:
        return "cpu"
    return f"cuda:{worker_index % visible_gpus}"


def check_workers_fit(workers_per_host: int, visible_gpus: int) -> None:
    """Refuse more worker processes on one host than it has GPUs (none: CPU workers, any number)."""
    if visible_gpus > 0 and workers_per_host > visible_gpus:
        raise ValueError(
            f"{workers_per_host} workers on a host with {visible_gpus} GPU(s) would share GPUs; "
            f"give at most {visible_gpus} workers (one per GPU)"
        )


def place_worker(worker_index: int) -> torch.device:
    """Make this process's current CUDA device the one :func:`worker_device` gives it (returned).

    ``pipeline.model_loading.resolve_device("auto")`` then names that device, so mining on a
    worker lands on its own GPU instead of ``cuda:0``.
    """
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    dev = torch.device(worker_device(worker_index, visible))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
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


def make_sampler(dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True) -> DistributedSampler:
    """A DistributedSampler splitting ``dataset`` over ranks (``drop_last`` keeps steps equal).

    One process gets one too (``num_replicas=1``): the epoch's order is then the same permutation
    the ranks of a W-process run split between them, so step k of a single process with batch
    W x b sees the images of the W ranks' step k with batch b (same global batch, same losses up
    to float rounding). Call ``sampler.set_epoch(e)`` before each epoch so that every epoch is
    shuffled differently and identically on every rank.
    """
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
    "check_workers_fit",
    "init_distributed",
    "launched_by_torchrun",
    "make_sampler",
    "place_worker",
    "process_group",
    "resolve_device",
    "shutdown",
    "unwrap",
    "worker_device",
    "worker_local_index",
    "wrap_model",
]
