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


def _fake_agent(tmp_path, name: str = "agent") -> str:
    """An executable standing in for python: writes its pid, then waits (as a torchrun agent
    whose ranks wait in a collective); exits 143 on SIGTERM."""
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\necho $$ > {tmp_path / (name + '.pid')}\nexec sleep 120\n")
    script.chmod(0o755)
    return str(script)


def _wait_for(cond, timeout: float = 20.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_stop_agents_ends_a_running_launch_of_that_rendezvous(tmp_path) -> None:
    """What train_on_cluster does to the other agents when one failed: their launch ends now,
    not when the process group's collective times out."""
    import threading
    import time

    from joindet.flows.torchrun import stop_agents

    errors: list[BaseException] = []

    def launch() -> None:
        try:
            run_torchrun(tmp_path, 1, 1, python=_fake_agent(tmp_path), nnodes=2, rdzv_endpoint="h:1", rdzv_id="r1")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=launch)
    thread.start()
    assert _wait_for(lambda: (tmp_path / "agent.pid").exists())
    assert stop_agents("other-rendezvous") == 0  # another launch's agents are left alone
    t = time.monotonic()
    assert stop_agents("r1", grace_s=10) == 1
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - t < 10
    assert len(errors) == 1 and isinstance(errors[0], DistributedTrainError)
    assert stop_agents("r1") == 0  # unregistered once ended


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_an_agent_gets_sigterm_when_the_process_that_started_it_is_killed(tmp_path) -> None:
    """A SIGKILLed Dask worker must not leave its torchrun agent (and the agent's ranks) running."""
    import os
    import signal
    import subprocess
    import sys

    agent = _fake_agent(tmp_path)
    code = (
        "from joindet.flows.torchrun import run_torchrun\n"
        f"run_torchrun({str(tmp_path)!r}, 1, 1, python={agent!r}, nnodes=2, rdzv_endpoint='h:1', rdzv_id='r2')\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert _wait_for(lambda: (tmp_path / "agent.pid").exists())
        pid = int((tmp_path / "agent.pid").read_text())
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # reaped by init only after it exits; a zombie counts as gone
            return open(f"/proc/{pid}/stat").read().split()[2] == "Z"

        assert _wait_for(gone), "the agent outlived the process that started it"
    finally:
        launcher.kill()
