"""Options shared by the ``flow`` and ``stage`` commands, and their output helpers."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from joindet.flows.runners import RunnerChoice


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


def runner_options(func: Callable) -> Callable:
    """--workers / --dask-address / --threads / --nproc-per-node / --no-prefect."""
    opts = [
        click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            help="Mine on a local Dask cluster of N worker processes (prefect-dask).",
        ),
        click.option(
            "--dask-address",
            default=None,
            metavar="tcp://HOST:PORT",
            help="Mine on an existing Dask cluster; the run directory must be shared storage.",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=1),
            default=None,
            help="Threads of the default (thread-pool) runner; default: one per CPU core.",
        ),
        click.option(
            "--nproc-per-node",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Train with torchrun on G processes (DDP: gloo on CPU, nccl on GPU).",
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


def runner_choice(workers: int | None, dask_address: str | None, threads: int | None, no_prefect: bool) -> RunnerChoice:
    choice = RunnerChoice(workers=workers, dask_address=dask_address, threads=threads)
    if no_prefect and choice.uses_dask:
        raise click.UsageError(
            "--workers/--dask-address run mining through Prefect's Dask task runner; drop --no-prefect."
        )
    return choice


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
