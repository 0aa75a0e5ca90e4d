"""The Dask task runner of joindet's clusters: prefect-dask's, plus device placement of workers.

:class:`ClusterTaskRunner` is prefect-dask's ``DaskTaskRunner`` whose client registers
:class:`GpuPlacement` on every worker (those there and those that join later): a worker makes
``pipeline.distributed.worker_device(index, visible GPUs)`` its current CUDA device before it
runs a task, so the workers of a GPU host mine on different GPUs. The flow's steps reach the
client through :func:`current_client` to start torchrun agents on workers.
"""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin
from prefect_dask import DaskTaskRunner

PLUGIN_NAME = "joindet-gpu-placement"


class GpuPlacement(WorkerPlugin):
    """On worker start: place the worker on its device (CPU workers: nothing to do)."""

    name = PLUGIN_NAME

    def setup(self, worker: Any) -> None:
        from joindet.pipeline.distributed import place_worker, worker_local_index

        worker.joindet_device = str(place_worker(worker_local_index(worker.name)))


class ClusterTaskRunner(DaskTaskRunner):
    """``DaskTaskRunner`` that places each worker on its own GPU (see the module docstring)."""

    @property
    def client(self) -> Any:
        new = self._client is None
        client = super().client
        if new:
            client.register_plugin(GpuPlacement(), name=PLUGIN_NAME)
        return client


def current_client() -> Any | None:
    """The Dask client of the running flow's task runner, or None when it does not run on Dask."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    runner = getattr(ctx, "task_runner", None) if ctx is not None else None
    if isinstance(runner, DaskTaskRunner):
        return runner.client
    return None


def worker_devices(client: Any) -> dict[str, str]:
    """``{worker address: device}`` as each worker placed itself (for logs and tests)."""
    return client.run(lambda dask_worker: getattr(dask_worker, "joindet_device", "?"))
