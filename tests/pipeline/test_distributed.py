"""pipeline.distributed: single-process fallbacks, and a real two-process gloo group under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from joindet.pipeline.distributed import (
    DistInfo,
    all_reduce_mean_dict,
    all_reduce_sum,
    broadcast_object,
    init_distributed,
    launched_by_torchrun,
    make_sampler,
    resolve_device,
    unwrap,
    wrap_model,
)

ROOT = Path(__file__).resolve().parents[2]


def test_single_process_is_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert not launched_by_torchrun()
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu")) and not info.owns_group
    assert info.is_main and not info.distributed
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, info) is model and unwrap(model) is model
    sampler = make_sampler(list(range(5)), info, seed=0)  # type: ignore[arg-type]
    assert sampler.num_replicas == 1 and sorted(sampler) == [0, 1, 2, 3, 4]
    assert all_reduce_sum(2.5, info) == 2.5
    assert all_reduce_mean_dict({"a": 1.0}, info) == {"a": 1.0}
    assert broadcast_object({"x": 1}, info) == {"x": 1}


def test_world_size_one_is_not_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert not launched_by_torchrun()


def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="train.device"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from joindet.pipeline.distributed import (init_distributed, make_sampler, wrap_model, all_reduce_sum,
        all_reduce_mean_dict, broadcast_object, unwrap, shutdown)
    info = init_distributed("cpu")
    torch.manual_seed(info.rank)  # different init per rank: DDP must broadcast rank 0's weights
    model = wrap_model(torch.nn.Linear(3, 1), info)
    sampler = make_sampler(list(range(10)), info, seed=0)
    sampler.set_epoch(1)
    x = torch.full((2, 3), float(info.rank + 1))
    model(x).sum().backward()
    grad = unwrap(model).weight.grad.tolist()
    out = {
        "rank": info.rank, "world": info.world_size, "indices": list(sampler),
        "sum": all_reduce_sum(info.rank + 1, info),
        "mean": all_reduce_mean_dict({"b": 2.0 * info.rank, "a": 1.0}, info),
        "obj": broadcast_object({"from": info.rank}, info),
        "weight": unwrap(model).weight.tolist(), "grad": grad, "owns": info.owns_group,
        "again_owns": init_distributed("cpu").owns_group,  # an existing group is reused, not owned
    }
    del model  # as in the stages: the DDP wrapper is gone before the group is destroyed
    shutdown(info)
    with open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w") as f:
        json.dump(out, f)
    """
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_process_gloo_group(tmp_path: Path) -> None:
    # The variables torchrun would set, without its agent (cheaper; test_train runs real torchrun).
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    base = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE="2",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            env=dict(base, RANK=str(r), LOCAL_RANK=str(r)),
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    for p in procs:
        _, err = p.communicate(timeout=110)
        assert p.returncode == 0, err[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r1["world"]) == (2, 2)
    assert sorted(r0["indices"] + r1["indices"]) == sorted(set(r0["indices"] + r1["indices"]))
    assert len(r0["indices"]) == len(r1["indices"]) == 5
    assert r0["sum"] == r1["sum"] == 3.0
    assert r0["mean"] == r1["mean"] == {"a": 1.0, "b": 1.0}
    assert r0["obj"] == r1["obj"] == {"from": 0}
    assert r0["owns"] and not r0["again_owns"]
    assert r0["weight"] == r1["weight"]  # DDP broadcast rank 0's parameters
    # gradients averaged: d/dw sum(w.x) = 2 * (rank + 1) per rank -> mean over ranks = 3
    assert r0["grad"] == r1["grad"] == [[3.0, 3.0, 3.0]]
