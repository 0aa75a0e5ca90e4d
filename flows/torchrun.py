"""Launching the train stage under torchrun (``python -m torch.distributed.run``) for DDP.

The worker entry point is ``pipeline.stages.train_worker``: each of the processes joins the
process group torchrun sets up (gloo on CPU, nccl on GPU) and runs the train stage on its share
of every batch; rank 0 writes the checkpoints.

Two launches:

- one machine (``--nproc-per-node G``): ``torchrun --standalone`` as a child of the flow;
- several (``--nnodes N`` on a Dask cluster): :func:`train_on_cluster` starts one torchrun agent
  per node inside N Dask workers (on N different hosts when the cluster has them), each with
  ``--nnodes N --nproc-per-node G`` and a c10d rendezvous hosted by the first agent. World size
  is N x G; the batch size is per process, so the global batch is N x G x ``train.batch_size``
  and the learning rate is kept as configured (:func:`scale_summary`).

An agent that fails (a killed worker process, a dead rank) fails the whole block with
:class:`DistributedTrainError`; the next resume continues from the last checkpoint. No agent
outlives the block: when one fails, the others are stopped (SIGTERM, upon which torchrun stops
its ranks; SIGKILL after ``STOP_GRACE_S``), and on Linux an agent gets SIGTERM when the process
that started it dies (a killed Dask worker), so no rank is left holding a GPU in a collective
that would only time out after the process group's 30 minutes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

WORKER_MODULE = "joindet.pipeline.stages.train_worker"
#: How the learning rate follows the global batch: kept as configured (no linear scaling).
LR_RULE = "kept"


#: Seconds a stopped agent has to stop its ranks before it is killed.
STOP_GRACE_S = 30.0

#: The torchrun agents this process runs, by rendezvous id (stop_agents ends them).
_AGENTS: dict[str, list[subprocess.Popen]] = {}
_AGENTS_LOCK = threading.Lock()


class DistributedTrainError(RuntimeError):
    """torchrun exited with a non-zero status."""


def _libc_prctl() -> object | None:
    """libc's prctl on Linux (loaded here, not in the forked child), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _term_with_parent() -> None:
    """In the forked agent, before exec: SIGTERM when the starting thread's process dies."""
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))  # type: ignore[operator]


def stop_agents(rdzv_id: str | None = None, grace_s: float = STOP_GRACE_S) -> int:
    """Stop the torchrun agents this process runs (those of ``rdzv_id``; None: all): SIGTERM, then
    SIGKILL after ``grace_s``. Returns how many were still running."""
    with _AGENTS_LOCK:
        procs = [p for key, ps in _AGENTS.items() if rdzv_id in (None, key) for p in ps]
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    for p in running:
        try:
            p.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return len(running)


def torchrun_command(
    run_path: str | Path,
    end_epoch: int,
    nproc_per_node: int,
    python: str = sys.executable,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
    is_host: bool | None = None,
) -> list[str]:
    """argv that trains run ``run_path`` up to ``end_epoch`` (exclusive).

    ``nnodes == 1`` without an endpoint: ``--standalone`` on ``nproc_per_node`` processes. Else a
    c10d rendezvous at ``rdzv_endpoint`` (HOST:PORT) named ``rdzv_id``; ``is_host`` says whether
    this agent hosts the rendezvous store (None: torch decides from the hostname).
    """
    if nproc_per_node < 1:
        raise ValueError(f"--nproc-per-node {nproc_per_node}: give at least 1 process.")
    if nnodes < 1:
        raise ValueError(f"--nnodes {nnodes}: give at least 1 node.")
    if end_epoch < 1:
        raise ValueError(f"end epoch {end_epoch} must be at least 1.")
    if nnodes > 1 and rdzv_endpoint is None:
        raise ValueError(f"--nnodes {nnodes} needs a rendezvous endpoint HOST:PORT reachable from every node.")
    if rdzv_endpoint is None:
        launch = ["--standalone"]
    else:
        launch = [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id or 'joindet'}",
        ]
        if is_host is not None:
            launch.append(f"--rdzv-conf=is_host={int(is_host)}")
    return [
        python,
        "-m",
        "torch.distributed.run",
        *launch,
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
    **rendezvous: Any,
) -> None:
    """Run the train stage under torchrun and wait; raise DistributedTrainError naming the exit code.

    The flow that calls this holds the run's writer lock; the worker processes are its children
    (or, on a cluster, children of a Dask worker acting for the flow) and are told so through
    ``JOINDET_LOCK_HELD_BY`` (the launching process's pid) so they need not take it.
    ``rendezvous``: ``nnodes``, ``rdzv_endpoint``, ``rdzv_id``, ``is_host`` of :func:`torchrun_command`.
    """
    cmd = torchrun_command(run_path, end_epoch, nproc_per_node, python=python, **rendezvous)
    child_env = dict(os.environ if env is None else env)
    child_env["JOINDET_LOCK_HELD_BY"] = str(os.getpid())
    # G processes share the machine's cores (a Dask worker already says 1).
    child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc_per_node)))
    # The workers' stdout (rank 0 prints the stage summary) goes to our stderr: stdout belongs
    # to the command's own result (one JSON document with --json).
    key = str(rendezvous.get("rdzv_id") or "standalone")
    proc = subprocess.Popen(
        cmd,
        env=child_env,
        stdout=sys.stderr.fileno() if _has_fd(sys.stderr) else 2,
        # preexec runs in the forked child of a threaded process: it only calls prctl (loaded above).
        preexec_fn=_term_with_parent if _PRCTL is not None else None,
    )
    with _AGENTS_LOCK:
        _AGENTS.setdefault(key, []).append(proc)
    try:
        proc.wait()
    except BaseException:  # Ctrl-C or a cancelled task: the ranks must not outlive us
        stop_agents(key)
        raise
    finally:
        with _AGENTS_LOCK:
            _AGENTS[key].remove(proc)
            if not _AGENTS[key]:
                del _AGENTS[key]
    if proc.returncode != 0:
        where = f" (node agent on {socket.gethostname()})" if rendezvous.get("rdzv_endpoint") else ""
        raise DistributedTrainError(
            f"torchrun training of {run_path} to epoch {end_epoch} on {nproc_per_node} processes{where} exited with "
            f"status {proc.returncode}; see the worker output above, then rerun `joindet stage run train {run_path}` "
            "or resume the flow: training continues from the last checkpoint."
        )


def pick_agent_workers(workers: dict[str, dict[str, Any]], nnodes: int) -> list[str]:
    """Addresses of ``nnodes`` Dask workers to host one torchrun agent each: one per host first
    (sorted by host, then name), then further workers of hosts already used (a loopback cluster).

    ``workers``: the scheduler's ``{address: {"host": ..., "name": ...}}``.
    """
    if len(workers) < nnodes:
        raise DistributedTrainError(
            f"--nnodes {nnodes} needs {nnodes} Dask workers to host the torchrun agents; the cluster has {len(workers)}"
        )
    ordered = sorted(workers, key=lambda a: (str(workers[a].get("host")), str(workers[a].get("name")), a))
    first, rest, seen = [], [], set()
    for addr in ordered:
        host = workers[addr].get("host")
        (rest if host in seen else first).append(addr)
        seen.add(host)
    return (first + rest)[:nnodes]


def free_port() -> int:
    """A TCP port free on this host now (for the rendezvous store the first agent hosts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def train_on_cluster(client: Any, run_path: str, end_epoch: int, nnodes: int, nproc_per_node: int) -> None:
    """Train up to ``end_epoch`` with one torchrun agent per node inside ``nnodes`` Dask workers.

    The first chosen worker's host serves the c10d rendezvous on a port free there. Waits for
    every agent; when one fails, the others are cancelled and DistributedTrainError names it.
    """
    from distributed import as_completed, wait

    info = client.scheduler_info(n_workers=-1)["workers"]
    chosen = pick_agent_workers(info, nnodes)
    host = info[chosen[0]]["host"]
    port = client.submit(free_port, workers=[chosen[0]], pure=False).result()
    rdzv_id = f"joindet-{uuid.uuid4().hex[:12]}"
    futures = [
        client.submit(
            run_torchrun,
            run_path,
            end_epoch,
            nproc_per_node,
            nnodes=nnodes,
            rdzv_endpoint=f"{host}:{port}",
            rdzv_id=rdzv_id,
            is_host=i == 0,
            workers=[addr],
            allow_other_workers=False,
            pure=False,
            key=f"torchrun-agent-{i}-{rdzv_id}",
        )
        for i, addr in enumerate(chosen)
    ]
    failed = None
    for future in as_completed(futures, loop=client.loop):
        if future.status != "finished":
            failed = future
            break
    if failed is not None:
        # Cancelling a running task does not stop its thread: stop the other agents themselves
        # (their ranks wait in a collective for the dead one), then let their tasks end.
        client.run(stop_agents, rdzv_id, workers=chosen, on_error="ignore")
        wait(futures, timeout=STOP_GRACE_S + 30)
        client.cancel(futures)
        try:
            failed.result()
        except DistributedTrainError:
            raise
        except BaseException as exc:
            raise DistributedTrainError(
                f"a torchrun agent of {run_path} (epochs up to {end_epoch}) failed: {exc!r}; resume the flow: "
                "training continues from the last checkpoint."
            ) from None


def scale_summary(batch_size: int, nnodes: int, nproc_per_node: int, lr: float) -> dict[str, Any]:
    """World size, per-process and global batch, and the learning rate rule of a training launch."""
    world = nnodes * nproc_per_node
    return {
        "world_size": world,
        "nnodes": nnodes,
        "nproc_per_node": nproc_per_node,
        "batch_per_process": batch_size,
        "global_batch": batch_size * world,
        "lr": lr,
        "lr_rule": LR_RULE,
    }


def record_scale(run_path: str | Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` as ``run.json``'s ``"training"`` entry (atomically; the rest unchanged)."""
    path = Path(run_path) / "run.json"
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("training") == summary:
        return
    info["training"] = summary
    tmp = path.with_name(f".run.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _has_fd(stream: object) -> bool:
    try:
        stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return True
