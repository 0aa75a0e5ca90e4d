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
    with pytest.raises(DistributedTrainError, match=r"status 1; .*joindet stage run train /"):
        run_torchrun(tmp_path / "run", 1, 1, python="/bin/false")


def test_several_nodes_meet_at_a_c10d_rendezvous_instead_of_standalone() -> None:
    cmd = torchrun_command("/runs/a", 4, 2, python="py", nnodes=2, rdzv_endpoint="n1:29400", rdzv_id="r", is_host=True)
    assert "--standalone" not in cmd
    assert {
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=n1:29400",
        "--rdzv-id=r",
        "--rdzv-conf=is_host=1",
    } <= set(cmd)
    assert "--nproc-per-node=2" in cmd
    with pytest.raises(ValueError, match="rendezvous endpoint"):
        torchrun_command("/r", 1, 1, nnodes=2)


def test_agents_go_to_different_hosts_first() -> None:
    from joindet.flows.torchrun import DistributedTrainError, pick_agent_workers

    workers = {
        "tcp://a:1": {"host": "a", "name": "0"},
        "tcp://a:2": {"host": "a", "name": "1"},
        "tcp://b:1": {"host": "b", "name": "2"},
    }
    assert pick_agent_workers(workers, 2) == ["tcp://a:1", "tcp://b:1"]
    assert pick_agent_workers(workers, 3) == ["tcp://a:1", "tcp://b:1", "tcp://a:2"]
    with pytest.raises(DistributedTrainError, match="needs 4 Dask workers"):
        pick_agent_workers(workers, 4)


def test_scale_summary_states_the_global_batch_and_the_lr_rule() -> None:
    from joindet.flows.torchrun import scale_summary

    s = scale_summary(batch_size=4, nnodes=2, nproc_per_node=8, lr=2e-4)
    assert s["world_size"] == 16 and s["global_batch"] == 64 and s["lr"] == 2e-4 and s["lr_rule"] == "kept"
