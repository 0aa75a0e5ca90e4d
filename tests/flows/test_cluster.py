"""Scaling out, on this CPU: one JSON document on stdout, absolute paths, mining independent of the
runner, the GPU placement rule, cluster options, multi-node training on a loopback Dask cluster."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from flow_helpers import TWO_ROUNDS, CliProcess, pretrain_args

#: One update round (versions 0 and 1, checkpoints of epochs 0 and 1).
ONE_ROUND = ["schedule.epochs=2" if o.startswith("schedule.epochs") else o for o in TWO_ROUNDS]


def _finish_json(p: CliProcess, timeout: float) -> tuple[dict, str]:
    """The process's stdout parsed as exactly one JSON document (fails with its stderr)."""
    code, out, err = p.finish(timeout)
    assert code == 0, err[-4000:]
    try:
        return json.loads(out), err
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}):\n{out[:2000]}") from None


@pytest.mark.slow
def test_json_with_torchrun_workers_prints_one_document(tiny_data: Path, tmp_path: Path) -> None:
    args = pretrain_args(tiny_data, tmp_path / "run", "--no-prefect", "--nproc-per-node", "2", overrides=ONE_ROUND)
    report, err = _finish_json(CliProcess(args, tmp_path / "home"), timeout=400)
    assert report["trained_to"] == 1
    # rank 0's stage summary went to stderr, not into the document
    assert '"stage": "train"' in err or "world_size" in err


def test_relative_run_dir_and_data_root_are_recorded_absolute(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from joindet.flows.cli import main

    monkeypatch.chdir(tmp_path)
    rel_data = os.path.relpath(tiny_data, tmp_path)
    args = pretrain_args(Path(rel_data), Path("rel-run"), "--no-prefect", overrides=["schedule.epochs=1"])
    result = CliRunner().invoke(main, args + ["--set", "schedule.update_every=1"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "rel-run" / "run.json").read_text())
    assert os.path.isabs(info["config"]["data"]["root"])
    assert info["config"]["data"]["root"] == str(tiny_data)
    report = json.loads(result.stdout)
    assert report["run"] == str(tmp_path / "rel-run")


@pytest.mark.parametrize(
    "names, visible, devices",
    [
        # a LocalCluster on an 8-GPU node: worker i on GPU i, no two on one GPU
        (list(range(8)), 8, [f"cuda:{i}" for i in range(8)]),
        # dask-jobqueue's `dask worker --nworkers 4 --name SLURMCluster-3` on a 4-GPU node
        ([f"SLURMCluster-3-{i}" for i in range(4)], 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
        # dask-cuda pins every worker to one visible GPU: each uses the one it sees
        (["tcp://10.0.0.1:4001", "tcp://10.0.0.1:4002"], 1, ["cuda:0", "cuda:0"]),
        # no GPU: CPU workers
        ([0, 1], 0, ["cpu", "cpu"]),
    ],
)
def test_gpu_placement_gives_each_worker_of_a_host_its_own_gpu(names: list, visible: int, devices: list) -> None:
    from joindet.pipeline.distributed import worker_device, worker_local_index

    assert [worker_device(worker_local_index(n), visible) for n in names] == devices


def test_more_local_workers_than_gpus_are_refused() -> None:
    from joindet.pipeline.distributed import check_workers_fit

    check_workers_fit(8, 8)
    check_workers_fit(16, 0)  # CPU workers share nothing
    with pytest.raises(ValueError, match="at most 8 workers"):
        check_workers_fit(9, 8)


def test_one_process_sees_the_union_of_the_ranks_batches() -> None:
    import torch

    from joindet.pipeline.distributed import DistInfo, make_sampler

    data, b, w = list(range(12)), 2, 2
    single = list(make_sampler(data, DistInfo(), seed=3))  # type: ignore[arg-type]
    ranks = [list(make_sampler(data, DistInfo(r, w, r, torch.device("cpu")), seed=3)) for r in range(w)]  # type: ignore[arg-type]
    for step in range(len(data) // (b * w)):
        union = sorted(i for r in ranks for i in r[step * b : (step + 1) * b])
        assert union == sorted(single[step * b * w : (step + 1) * b * w])
