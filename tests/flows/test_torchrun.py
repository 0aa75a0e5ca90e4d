"""The torchrun launch command and its failure message."""

from __future__ import annotations

import pytest

from joindet.flows.torchrun import WORKER_MODULE, DistributedTrainError, run_torchrun, torchrun_command


def test_command_runs_the_train_worker_under_torch_distributed_run() -> None:
    cmd = torchrun_command("/runs/a", 4, 2, python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in cmd and "--standalone" in cmd
    i = cmd.index("-m", 3)
    assert cmd[i + 1] == WORKER_MODULE
    assert cmd[i + 2 :] == ["--run-dir", "/runs/a", "--end-epoch", "4"]


@pytest.mark.parametrize("nproc, end", [(0, 2), (2, 0)])
def test_bad_arguments_are_refused(nproc: int, end: int) -> None:
    with pytest.raises(ValueError):
        torchrun_command("/r", end, nproc)


def test_a_failing_launch_names_the_status_and_the_rerun_command(tmp_path) -> None:
    # /bin/false stands in for the interpreter: the launch exits 1 without starting torch.
    with pytest.raises(DistributedTrainError, match=r"status 1; .*joindet stage run train --run"):
        run_torchrun(tmp_path / "run", 1, 1, python="/bin/false")
