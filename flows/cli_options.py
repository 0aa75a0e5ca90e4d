"""Options shared by the ``flow`` and ``stage`` commands, and their output helpers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from joindet.flows.runners import CLUSTER_KINDS, RunnerChoice, RunnerError, split_cluster_options


def prefect_environment() -> None:
    """Environment Prefect reads when it starts, unless the user set it: telemetry off (its SQLite
    writes race), and a patient wait for the temporary server, whose start takes 7-20 s alone and
    longer on a loaded machine."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def quiet_prefect(quiet: bool) -> None:
    """With --quiet, Prefect logs warnings only (read when prefect is first imported)."""
    if quiet:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def set_option(func: Callable) -> Callable:
    return click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config field (repeatable), e.g. --set schedule.epochs=4 --set priors.momentum=0.5.",
    )(func)


def _count_option(name: str, minimum: int, help: str) -> Callable:
    """A whole-number option of at least ``minimum``, ``None`` when not given (the runner's default)."""
    return click.option(name, type=click.IntRange(min=minimum), default=None, help=help)


def runner_options(func: Callable) -> Callable:
    """Where the stages run: --cluster / --workers / --dask-address / --threads / --nodes /
    --gpus-per-node / --nproc-per-node / --nnodes / --no-prefect (read with :func:`runner_choice`)."""
    opts = [
        click.option(
            "--cluster",
            type=click.Choice(CLUSTER_KINDS),
            default=None,
            help="threads (default): a thread pool here; local: a Dask cluster of --workers processes; "
            "cuda: one Dask worker per GPU (dask-cuda); slurm/pbs: --nodes jobs (dask-jobqueue, "
            "queue/account/walltime/memory with --set cluster.KEY=VALUE or its config file).",
        ),
        _count_option(
            "--workers", 1, "Worker processes of a local (or cuda) Dask cluster; alone it means --cluster local."
        ),
        click.option(
            "--dask-address",
            default=None,
            metavar="tcp://HOST:PORT",
            help="Run on an existing Dask cluster; the run directory and data root must be shared storage.",
        ),
        _count_option("--threads", 1, "Threads of the default (thread-pool) runner; default: one per CPU core."),
        _count_option("--nodes", 1, "slurm/pbs: jobs (nodes) to start."),
        _count_option(
            "--gpus-per-node", 0, "slurm/pbs: GPUs, and Dask workers, per job (default 1; 0: CPU jobs of one worker)."
        ),
        click.option(
            "--nproc-per-node",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Train with torchrun on G processes per node (DDP: gloo on CPU, nccl on GPU).",
        ),
        _count_option(
            "--nnodes",
            1,
            "Train over N nodes: one torchrun agent per node in the Dask cluster's workers "
            "(c10d rendezvous); world size N x --nproc-per-node. Default: --nodes on slurm/pbs, else 1.",
        ),
        click.option(
            "--no-prefect", is_flag=True, help="Run the same steps in this process without Prefect (no server, no UI)."
        ),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def output_options(func: Callable) -> Callable:
    func = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(func)
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars; errors and the result only.")(func)


def runner_choice(
    overrides: tuple[str, ...] | list[str], no_prefect: bool = False, **options: Any
) -> tuple[RunnerChoice, list[str]]:
    """The runner the :func:`runner_options` ask for, and the ``--set`` overrides that remain once
    the ``cluster.KEY=VALUE`` ones (settings of the Slurm/PBS jobs) are taken out."""
    rest, cluster_settings = split_cluster_options(overrides)
    try:
        choice = RunnerChoice(options=cluster_settings, **options)
    except RunnerError as exc:
        raise click.UsageError(str(exc)) from None
    if no_prefect and choice.uses_dask:
        raise click.UsageError(
            "a Dask cluster (--cluster/--workers/--dask-address) runs the stages through Prefect's Dask task runner; "
            "drop --no-prefect."
        )
    return choice, rest


@contextmanager
def stdout_kept_for_json(as_json: bool) -> Iterator[None]:
    """With ``--json``, send everything written to this process's stdout (file descriptor 1) to
    stderr until the block ends, so that the one JSON document printed after it is alone on stdout.

    Children inherit the redirection: torchrun and its workers, Dask worker processes, a
    temporary Prefect server. Without a real descriptor (click's test runner) only Python's own
    ``sys.stdout`` is redirected.
    """
    if not as_json:
        yield
        return
    sys.stdout.flush()
    try:
        out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        saved_stdout = sys.stdout
        sys.stdout = sys.stderr
        try:
            yield
        finally:
            sys.stdout = saved_stdout
        return
    saved = os.dup(out_fd)
    os.dup2(err_fd, out_fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, out_fd)
        os.close(saved)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def stderr(message: str) -> None:
    click.echo(message, err=True)


def is_tty() -> bool:
    return sys.stderr.isatty()
