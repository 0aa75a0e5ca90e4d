"""Global test setup: a private PREFECT_HOME per test session, Prefect telemetry off, few threads.

Set before anything imports prefect or torch. Each pytest process gets its own Prefect home, so
concurrent sessions (and their temporary servers) never migrate one SQLite database at once.
Subprocesses that tests start inherit these variables; tests that start several Prefect processes
at once give each its own home (see tests/flows/e2e_helpers.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="joindet-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The temporary server starts slowly when the two cores are busy with other tests.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Two cores shared by everyone: one intra-op thread per test process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ARG001 (pytest hook signature)
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


@pytest.fixture(scope="module")
def fault_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset of the fault-injection tests (tests/fault_run.py): 6 synthetic train images of
    64 px and 2 val images, made once per test module."""
    from joindet.pipeline.data.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("faults") / "syn", num_images=6, size=64, val_images=2)
