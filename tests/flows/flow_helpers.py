"""Helpers of the flows end-to-end tests: CLI arguments, CLI subprocesses and kills, comparisons.

Every subprocess runs in its own session (its own process group, killed whole with SIGKILL) and
with its own PREFECT_HOME, so concurrent Prefect processes never migrate one database at once and
a killed flow's temporary Prefect server dies with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: Two update rounds with n = 1: versions 0, 1, 2 and checkpoints of epochs 0, 1, 2.
TWO_ROUNDS = [
    "schedule.epochs=3",
    "schedule.update_every=1",
    "mine.shards=4",
    "train.num_workers=0",
    "train.batch_size=2",
    "mine.batch_size=2",
    "mine.save_attention=false",
]
NUM_IMAGES = 8
IMAGE_SIZE = 64


def pretrain_args(data: Path, run_dir: Path, *extra: str, overrides: list[str] = TWO_ROUNDS) -> list[str]:
    args = [
        "flow",
        "run",
        "pretrain",
        "--dataset",
        "synthetic",
        "--data-root",
        str(data),
        "--preset",
        "tiny",
        "--run-dir",
        str(run_dir),
        "--quiet",
        "--json",
        "--threads",
        "1",
    ]
    for o in overrides:
        args += ["--set", o]
    return args + list(extra)


class CliProcess:
    """``python -m flows.cli ARGS`` in its own process group with its own PREFECT_HOME."""

    def __init__(self, args: list[str], home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "OMP_NUM_THREADS": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "joindet", *args],
            env=env,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_for(self, condition: Callable[[], bool], timeout: float, poll: float = 0.02) -> bool:
        """Poll ``condition`` until it holds (True) or the process ends / time runs out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.proc.poll() is not None:
                return condition()
            time.sleep(poll)
        return False

    def kill_group(self) -> None:
        """SIGKILL the whole process group (the flow, its workers, a temporary Prefect server)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def finish(self, timeout: float) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise
        return self.proc.returncode, out, err


def run_cli(args: list[str], home: Path, timeout: float = 240) -> dict:
    """Run the CLI to completion in a subprocess; return its --json output (fail with its stderr)."""
    p = CliProcess(args, home)
    code, out, err = p.finish(timeout)
    assert code == 0, f"joindet {' '.join(args)} failed ({code}):\n{err[-4000:]}"
    return json.loads(out)


def assert_same_priors(a: Path, b: Path) -> list[int]:
    """Both runs hold the same committed versions with identical boxes of every kind; returns them."""
    from joindet.priors import PriorStore

    sa, sb = PriorStore(a), PriorStore(b)
    assert sa.versions() == sb.versions()
    for v in sa.versions():
        kinds = sa.manifest(v).kinds
        assert kinds == sb.manifest(v).kinds
        for k in kinds:
            assert sa.read(v, k).equals(sb.read(v, k)), f"version {v} kind {k} differs between {a} and {b}"
    return sa.versions()
