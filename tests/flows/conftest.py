"""Fixtures of the flows end-to-end tests (helpers live in flow_helpers.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flow_helpers import IMAGE_SIZE, NUM_IMAGES, CliProcess


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset of 8 train images of 64 px (and 2 val images)."""
    from joindet.pipeline.data.synthetic import generate_synthetic

    return generate_synthetic(
        tmp_path_factory.mktemp("data") / "synthetic", num_images=NUM_IMAGES, size=IMAGE_SIZE, val_images=2
    )


@pytest.fixture
def cli_process(tmp_path: Path) -> Iterator[Callable[..., CliProcess]]:
    started: list[CliProcess] = []

    def start(args: list[str]) -> CliProcess:
        p = CliProcess(args, tmp_path / f"prefect-home-{len(started)}")
        started.append(p)
        return p

    yield start
    for p in started:  # never leave a flow (or its Prefect server) behind
        if p.proc.poll() is None:
            p.kill_group()
        else:
            try:
                os.killpg(p.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
