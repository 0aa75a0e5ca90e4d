"""Launching the train stage under torchrun (``python -m torch.distributed.run``) for DDP.

The worker entry point is ``pipeline.stages.train_worker`` (stages engineers): each of the G
processes joins the process group torchrun sets up (gloo on CPU, nccl on GPU) and runs the
train stage on its share of every batch; rank 0 writes the checkpoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WORKER_MODULE = "joindet.pipeline.stages.train_worker"


class DistributedTrainError(RuntimeError):
    """torchrun exited with a non-zero status."""


def torchrun_command(
    run_path: str | Path, end_epoch: int, nproc_per_node: int, python: str = sys.executable
) -> list[str]:
    """argv that trains run ``run_path`` up to ``end_epoch`` (exclusive) on ``nproc_per_node`` processes."""
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node {nproc_per_node}: give at least 1 process.")
    if end_epoch < 1:
        raise ValueError(f"end epoch {end_epoch} must be at least 1.")
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc_per_node}",
        "-m",
        WORKER_MODULE,
        # --run-dir, not --run: torchrun's own parser takes --run as an abbreviation of --run-path.
        "--run-dir",
        str(run_path),
        "--end-epoch",
        str(end_epoch),
    ]


def run_torchrun(
    run_path: str | Path,
    end_epoch: int,
    nproc_per_node: int,
    env: dict[str, str] | None = None,
    python: str = sys.executable,
) -> None:
    """Run the train stage under torchrun and wait; raise DistributedTrainError naming the exit code.

    The flow that calls this holds the run's writer lock; the worker processes are its children
    and are told so through ``JOINDET_LOCK_HELD_BY`` (the parent's pid) so they need not take it.
    """
    cmd = torchrun_command(run_path, end_epoch, nproc_per_node, python=python)
    child_env = dict(os.environ if env is None else env)
    child_env["JOINDET_LOCK_HELD_BY"] = str(os.getpid())
    # One thread per process: G processes share the machine's cores.
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    # The workers' stdout (rank 0 prints the stage summary) goes to our stderr: stdout belongs
    # to the command's own result (one JSON document with --json).
    proc = subprocess.run(cmd, env=child_env, stdout=sys.stderr.fileno() if _has_fd(sys.stderr) else 2)
    if proc.returncode != 0:
        raise DistributedTrainError(
            f"torchrun training of {run_path} to epoch {end_epoch} on {nproc_per_node} processes exited with "
            f"status {proc.returncode}; see the worker output above, then rerun `joindet stage run train --run {run_path}`."
        )


def _has_fd(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return True
