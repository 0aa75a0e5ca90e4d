"""Where a run's stages execute: local threads, or one Dask cluster serving every stage.

Kinds (``--cluster``): ``threads`` (a thread pool in the flow's process, the default),
``local`` (a Dask LocalCluster of ``--workers`` processes), ``cuda`` (dask-cuda's
LocalCUDACluster: one worker per visible GPU, each pinned to its own), ``slurm`` / ``pbs``
(dask-jobqueue: ``--nodes`` jobs of ``--gpus-per-node`` workers each), and an existing
scheduler (``--dask-address``). Every runner executes the same ``mine_shard(run_path, version,
shard_id)`` calls and shards are written to the run directory by whoever computes them, so
results do not depend on the runner; a cluster therefore needs the run directory and the data
root on a filesystem every worker mounts at the same absolute path.

The default shard count follows the workers (:func:`resolved_shards`): at least one shard per
worker, so that no worker idles while another computes two shards.

Each Dask worker is placed on a device when it starts (:class:`GpuPlacement`, the rule is
``pipeline.distributed.worker_device``). dask-cuda and dask-jobqueue are the optional extra
``[cluster]``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

CLUSTER_KINDS = ("threads", "local", "cuda", "slurm", "pbs")
#: Kinds whose workers run on other machines than the flow.
REMOTE_KINDS = ("slurm", "pbs", "address")
_JOBQUEUE_CLASS = {"slurm": "dask_jobqueue.SLURMCluster", "pbs": "dask_jobqueue.PBSCluster"}
_EXTRA_MODULE = {"cuda": "dask_cuda", "slurm": "dask_jobqueue", "pbs": "dask_jobqueue"}


class RunnerError(ValueError):
    """Task-runner options that cannot be combined or used."""


@dataclass(frozen=True)
class RunnerChoice:
    """What the user asked for (the command line's runner options).

    ``cluster``: one of :data:`CLUSTER_KINDS`, or None (``threads``; ``local`` when ``workers``
    is given; the existing cluster when ``dask_address`` is). ``threads`` caps the thread pool
    of the ``threads`` runner (None: one thread per CPU core). ``nodes`` and ``gpus_per_node``
    size a Slurm/PBS cluster; ``nnodes`` is the number of torchrun agents that train together
    (one per node, each with ``nproc_per_node`` processes). ``options``: ``cluster.KEY=VALUE``
    settings passed to the dask-jobqueue class (queue, account, walltime, memory, ...).
    """

    workers: int | None = None
    dask_address: str | None = None
    threads: int | None = None
    cluster: str | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None
    nproc_per_node: int = 1
    nnodes: int | None = None
    options: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.workers is not None and self.dask_address is not None:
            raise RunnerError(
                "--workers starts a local Dask cluster and --dask-address joins an existing one; give only one of them."
            )
        if self.workers is not None and self.workers < 1:
            raise RunnerError(f"--workers {self.workers}: give at least 1 worker process.")
        if self.dask_address is not None and "://" not in self.dask_address:
            raise RunnerError(
                f"--dask-address {self.dask_address!r} is not an address; use the scheduler's tcp://HOST:PORT."
            )
        if self.cluster is not None and self.cluster not in CLUSTER_KINDS:
            raise RunnerError(f"--cluster {self.cluster!r}: choose one of {', '.join(CLUSTER_KINDS)}.")
        if self.cluster is not None and self.dask_address is not None:
            raise RunnerError("--dask-address joins an existing cluster; drop --cluster (it starts a new one).")
        if self.cluster == "threads" and self.workers is not None:
            raise RunnerError("--cluster threads runs in this process; size it with --threads, not --workers.")
        if self.cluster in ("slurm", "pbs") and self.workers is not None:
            raise RunnerError(f"--cluster {self.cluster} is sized with --nodes and --gpus-per-node, not --workers.")
        for flag, value in (("--nodes", self.nodes), ("--gpus-per-node", self.gpus_per_node)):
            if value is not None and self.kind not in ("slurm", "pbs"):
                raise RunnerError(f"{flag} sizes a --cluster slurm|pbs; the {self.kind} runner does not take it.")
            if value is not None and value < (1 if flag == "--nodes" else 0):
                raise RunnerError(f"{flag} {value} is too small.")
        if self.nproc_per_node < 1:
            raise RunnerError(f"--nproc-per-node {self.nproc_per_node}: give at least 1 process.")
        if self.nnodes is not None and self.nnodes > 1 and not self.uses_dask:
            raise RunnerError(
                f"--nnodes {self.nnodes} trains over several machines: give a Dask cluster "
                "(--cluster local|cuda|slurm|pbs or --dask-address) whose workers start the torchrun agents."
            )
        if self.options and self.kind not in ("slurm", "pbs"):
            raise RunnerError("--set cluster.* settings configure a --cluster slurm|pbs job; this runner takes none.")

    @property
    def kind(self) -> str:
        """``threads``, ``local``, ``cuda``, ``slurm``, ``pbs`` or ``address`` (an existing cluster)."""
        if self.dask_address is not None:
            return "address"
        if self.cluster is not None:
            return self.cluster
        return "local" if self.workers is not None else "threads"

    @property
    def uses_dask(self) -> bool:
        return self.kind != "threads"

    @property
    def remote(self) -> bool:
        """True when workers may run on other machines than this one."""
        return self.kind in REMOTE_KINDS

    @property
    def train_nodes(self) -> int:
        """torchrun agents of a training block: ``--nnodes``, else ``--nodes`` on Slurm/PBS, else 1."""
        if self.nnodes is not None:
            return self.nnodes
        return (self.nodes or 1) if self.kind in ("slurm", "pbs") else 1

    @property
    def train_on_workers(self) -> bool:
        """Training runs as torchrun agents on the cluster's workers (the flow may sit on a login
        node without GPUs), rather than in (or under) the flow's own process."""
        return self.uses_dask and (self.train_nodes > 1 or self.kind in ("slurm", "pbs"))

    def describe(self) -> str:
        kind = self.kind
        if kind == "address":
            return f"Dask cluster at {self.dask_address}"
        if kind == "local":
            n = self.workers or 2
            return f"local Dask cluster of {n} process{'es' if n > 1 else ''}"
        if kind == "cuda":
            return "local Dask cluster of one worker per GPU (dask-cuda)"
        if kind in ("slurm", "pbs"):
            return f"{kind} cluster of {self.nodes or 1} job(s) x {self.gpus_per_node or 1} worker(s)"
        return f"local threads ({self.thread_count()})"

    def thread_count(self) -> int:
        return self.threads or max(1, os.cpu_count() or 1)


def worker_count(
    choice: RunnerChoice,
    visible_gpus: Callable[[], int] | None = None,
    ask_cluster: Callable[[str], int | None] | None = None,
) -> int | None:
    """How many shards the runner computes at once: the thread count (``threads``), ``--workers``
    (``local``: 2 when not given), the visible GPUs (``cuda``, one worker each, unless
    ``--workers``), ``--nodes`` x workers per job (``slurm``/``pbs``: ``--gpus-per-node``, 1 for
    CPU jobs), or the workers of the cluster at ``--dask-address`` (``ask_cluster(address)``; None
    when it cannot be asked). ``visible_gpus`` / ``ask_cluster``: how to count them (defaults:
    ``CUDA_VISIBLE_DEVICES`` or torch, and a Dask client).
    """
    kind = choice.kind
    if kind == "threads":
        return choice.thread_count()
    if kind == "local":
        return choice.workers or 2
    if kind == "cuda":
        return choice.workers or max(1, (visible_gpus or _visible_gpus)())
    if kind in ("slurm", "pbs"):
        gpus = choice.gpus_per_node if choice.gpus_per_node is not None else 1
        return (choice.nodes or 1) * max(1, gpus)
    return (ask_cluster or _cluster_workers)(str(choice.dask_address))


def resolved_shards(configured: int, explicit: bool, workers: int | None) -> int:
    """``mine.shards`` of a run: the user's value when they set it (``explicit``), else the
    configured default raised to the worker count (at least one shard per worker)."""
    if explicit or workers is None:
        return configured
    return max(configured, workers)


def on_threads(one: Callable[[int], Any], shard_ids: list[int], threads: int) -> list[Any]:
    """``one(shard_id)`` for every shard on up to ``threads`` threads; results in shard order."""
    if threads <= 1 or len(shard_ids) <= 1:
        return [one(s) for s in shard_ids]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, shard_ids))


def _visible_gpus() -> int:
    """GPUs this node's Dask workers would get: ``CUDA_VISIBLE_DEVICES`` when set (what dask-cuda
    reads), else torch's count (0 without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return len([d for d in listed.split(",") if d.strip()])
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cluster_workers(address: str, timeout: float = 10.0) -> int | None:
    """Workers of the Dask cluster at ``address`` now, or None when it does not answer in time."""
    try:
        from distributed import Client

        with Client(address, timeout=timeout, set_as_default=False) as client:
            return len(client.scheduler_info().get("workers", {})) or None
    except Exception:  # an unreachable or odd scheduler: the count is a default, not a requirement
        return None


def require_extra(kind: str) -> Any:
    """Import the optional library ``--cluster kind`` needs, or fail naming the extra to install."""
    module = _EXTRA_MODULE[kind]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RunnerError(
            f"--cluster {kind} needs {module.replace('_', '-')}, which is not installed: "
            f'pip install "joindet[cluster]" (or pip install -e ".[cluster]" in a checkout) ({exc}).'
        ) from None


def cluster_kwargs(choice: RunnerChoice) -> tuple[str | None, dict[str, Any]]:
    """The Dask cluster class (qualified name, None: LocalCluster) and its keyword arguments."""
    kind = choice.kind
    if kind == "local":
        return None, {
            # One single-threaded process per worker: torch inside each worker already uses the
            # cores, and separate processes are what a multi-machine cluster looks like.
            "n_workers": choice.workers or 2,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    if kind == "cuda":
        kwargs: dict[str, Any] = {"threads_per_worker": 1, "dashboard_address": None}
        if choice.workers is not None:
            kwargs["n_workers"] = choice.workers
        return "dask_cuda.LocalCUDACluster", kwargs
    if kind in ("slurm", "pbs"):
        gpus = choice.gpus_per_node if choice.gpus_per_node is not None else 1
        processes = max(1, gpus)
        kwargs = {"processes": processes, "cores": processes, "n_workers": (choice.nodes or 1) * processes}
        if kind == "slurm" and gpus > 0:
            kwargs["job_extra_directives"] = [f"--gres=gpu:{gpus}"]
        for key, value in choice.options:
            kwargs[key] = _option_value(value)
        return _JOBQUEUE_CLASS[kind], kwargs
    raise RunnerError(f"the {kind} runner starts no cluster")


def split_cluster_options(overrides: list[str] | tuple[str, ...]) -> tuple[list[str], tuple[tuple[str, str], ...]]:
    """``--set`` overrides without the ``cluster.KEY=VALUE`` ones, and those as (KEY, VALUE) pairs.

    Cluster settings configure the jobs of this invocation only; they are not part of the run's
    configuration (they change where, not what, is computed).
    """
    rest, options = [], []
    for item in overrides:
        key, sep, value = item.partition("=")
        if key.startswith("cluster.") and sep:
            options.append((key[len("cluster.") :], value))
        else:
            rest.append(item)
    return rest, tuple(options)


def build_task_runner(choice: RunnerChoice) -> TaskRunner:
    """The Prefect task runner for ``choice`` (prefect-dask imported only when Dask is asked for)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if not choice.uses_dask:
        return ThreadPoolTaskRunner(max_workers=choice.thread_count())
    from joindet.flows.dask_runner import ClusterTaskRunner

    if choice.kind == "address":
        return ClusterTaskRunner(address=choice.dask_address)
    if choice.kind in _EXTRA_MODULE:
        require_extra(choice.kind)
    if choice.kind == "local":
        _check_local_gpus(choice.workers or 2)
    cls, kwargs = cluster_kwargs(choice)
    if cls is None:
        return ClusterTaskRunner(cluster_kwargs=kwargs)
    return ClusterTaskRunner(cluster_class=cls, cluster_kwargs=kwargs)


@contextmanager
def api_for_workers(choice: RunnerChoice) -> Iterator[str | None]:
    """Make the flow's Prefect API the one its Dask workers report task runs to.

    Threads: nothing to do. With ``PREFECT_API_URL`` set, workers get it (through the task's
    serialized settings and their environment). Without it, a local cluster gets one temporary
    server started here (instead of one per worker, each with its own database); workers on other
    machines cannot reach a server on this host's loopback, so Slurm/PBS without a reachable
    ``PREFECT_API_URL`` are refused with the command that starts one.
    """
    if not choice.uses_dask:
        yield None
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value()
    loopback = not url or urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")
    if choice.kind in ("slurm", "pbs") and loopback:
        raise RunnerError(
            f"--cluster {choice.kind}: workers on other nodes report to the flow's Prefect server, and "
            f"{'none is set' if not url else url + ' is this host only'}; start one they can reach "
            "(prefect server start --host 0.0.0.0) and export PREFECT_API_URL=http://THIS_HOST:4200/api"
        )
    if url:
        os.environ.setdefault("PREFECT_API_URL", url)
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()  # stopped when this process exits
    before = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = server.api_url  # local worker processes inherit it
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield server.api_url
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = before


def _check_local_gpus(workers: int) -> None:
    import torch

    from joindet.pipeline.distributed import check_workers_fit

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        check_workers_fit(workers, visible)
    except ValueError as exc:
        raise RunnerError(f"--workers {workers}: {exc}; or use --cluster cuda.") from None


def _option_value(text: str) -> Any:
    """A ``cluster.KEY=VALUE`` value: int, float, true/false, a comma list, or the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return [t.strip() for t in text.split(",") if t.strip()]
    return text
