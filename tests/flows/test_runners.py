"""Task-runner choice: threads by default, a local Dask cluster, an existing cluster; bad combinations."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from joindet.flows.runners import RunnerChoice, RunnerError, build_task_runner


def test_default_is_a_thread_pool_sized_by_threads() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    runner = build_task_runner(RunnerChoice(threads=3))
    assert isinstance(runner, ThreadPoolTaskRunner)
    assert runner._max_workers == 3
    assert "threads (3)" in RunnerChoice(threads=3).describe()


def test_workers_start_a_local_dask_cluster_of_single_threaded_processes() -> None:
    from prefect_dask import DaskTaskRunner

    runner = build_task_runner(RunnerChoice(workers=2))
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_kwargs["n_workers"] == 2
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert runner.cluster_kwargs["processes"] is True


def test_dask_address_joins_that_cluster() -> None:
    runner = build_task_runner(RunnerChoice(dask_address="tcp://10.0.0.1:8786"))
    assert runner.address == "tcp://10.0.0.1:8786"
    assert RunnerChoice(dask_address="tcp://h:1").uses_dask


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"workers": 2, "dask_address": "tcp://h:1"}, "only one"),
        ({"workers": 0}, "at least 1"),
        ({"dask_address": "localhost"}, "tcp://HOST:PORT"),
    ],
)
def test_bad_choices_are_refused_with_a_sentence(kwargs: dict, words: str) -> None:
    with pytest.raises(RunnerError, match=words):
        RunnerChoice(**kwargs)


@given(st.integers(min_value=1, max_value=64))
def test_thread_count_honours_the_request(n: int) -> None:
    assert RunnerChoice(threads=n).thread_count() == n
    assert not RunnerChoice(threads=n).uses_dask


@pytest.mark.parametrize(
    "kwargs, kind",
    [
        ({}, "threads"),
        ({"workers": 2}, "local"),
        ({"cluster": "local"}, "local"),
        ({"cluster": "cuda"}, "cuda"),
        ({"cluster": "slurm", "nodes": 2, "gpus_per_node": 8}, "slurm"),
        ({"dask_address": "tcp://h:1"}, "address"),
    ],
)
def test_the_cluster_kind_follows_the_options(kwargs: dict, kind: str) -> None:
    assert RunnerChoice(**kwargs).kind == kind


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"cluster": "threads", "workers": 2}, "--threads"),
        ({"cluster": "local", "dask_address": "tcp://h:1"}, "drop --cluster"),
        ({"cluster": "local", "nodes": 2}, "--nodes sizes"),
        ({"nnodes": 2}, "Dask cluster"),
        ({"cluster": "local", "options": (("queue", "gpu"),)}, "cluster.*"),
        ({"cluster": "slurm", "workers": 4}, "--nodes and --gpus-per-node"),
        ({"cluster": "gpu"}, "choose one of"),
    ],
)
def test_cluster_options_that_do_not_fit_are_refused(kwargs: dict, words: str) -> None:
    with pytest.raises(RunnerError, match=words):
        RunnerChoice(**kwargs)


def test_slurm_starts_nodes_jobs_of_one_worker_per_gpu_and_trains_on_every_node() -> None:
    from joindet.flows.runners import cluster_kwargs, split_cluster_options

    rest, options = split_cluster_options(["train.batch_size=2", "cluster.queue=gpu", "cluster.walltime=04:00:00"])
    assert rest == ["train.batch_size=2"]
    choice = RunnerChoice(cluster="slurm", nodes=2, gpus_per_node=8, nproc_per_node=8, options=options)
    cls, kw = cluster_kwargs(choice)
    assert cls == "dask_jobqueue.SLURMCluster"
    assert kw["processes"] == 8 and kw["n_workers"] == 16 and kw["job_extra_directives"] == ["--gres=gpu:8"]
    assert kw["queue"] == "gpu" and kw["walltime"] == "04:00:00"
    assert choice.train_nodes == 2 and choice.train_on_workers and choice.remote


def test_slurm_job_script_asks_for_the_gpus(tmp_path) -> None:
    jobqueue = pytest.importorskip("dask_jobqueue")
    from joindet.flows.runners import cluster_kwargs

    _, kw = cluster_kwargs(RunnerChoice(cluster="slurm", nodes=2, gpus_per_node=4, options=(("memory", "64GB"),)))
    kw.pop("n_workers")  # scaling would call sbatch; the script alone is what we check
    with jobqueue.SLURMCluster(**kw, log_directory=str(tmp_path)) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:4" in script and "--nworkers 4" in script


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails as when not installed
    with pytest.raises(RunnerError, match=r"joindet\[cluster\]"):
        build_task_runner(RunnerChoice(cluster="cuda"))


def test_local_workers_get_the_gpu_placement_plugin() -> None:
    from joindet.flows.dask_runner import ClusterTaskRunner

    assert isinstance(build_task_runner(RunnerChoice(cluster="local", workers=2)), ClusterTaskRunner)


@pytest.mark.parametrize(
    "kwargs, gpus, workers",
    [
        ({"threads": 3}, 8, 3),  # the thread pool's threads, whatever the GPUs
        ({"workers": 5}, 0, 5),  # --workers of a local cluster
        ({"cluster": "local"}, 0, 2),  # a local cluster's default size
        ({"cluster": "cuda"}, 8, 8),  # one worker per visible GPU
        ({"cluster": "cuda", "workers": 2}, 8, 2),
        ({"cluster": "cuda"}, 0, 1),
        ({"cluster": "slurm", "nodes": 2, "gpus_per_node": 4}, 0, 8),  # nodes x GPUs per node
        ({"cluster": "pbs", "nodes": 3}, 0, 3),  # one GPU (worker) per job by default
        ({"cluster": "slurm", "nodes": 2, "gpus_per_node": 0}, 0, 2),  # CPU jobs of one worker
        ({"dask_address": "tcp://h:1"}, 0, 6),  # what the scheduler says (asked below)
    ],
)
def test_worker_count_of_each_runner(kwargs: dict, gpus: int, workers: int) -> None:
    from joindet.flows.runners import worker_count

    asked: list[str] = []

    def ask(address: str) -> int:
        asked.append(address)
        return 6

    assert worker_count(RunnerChoice(**kwargs), visible_gpus=lambda: gpus, ask_cluster=ask) == workers
    assert asked == (["tcp://h:1"] if "dask_address" in kwargs else [])


def test_an_existing_cluster_that_does_not_answer_has_no_count() -> None:
    from joindet.flows.runners import resolved_shards, worker_count

    choice = RunnerChoice(dask_address="tcp://h:1")
    assert worker_count(choice, ask_cluster=lambda _address: None) is None
    assert resolved_shards(4, False, None) == 4  # the configured default stays


@pytest.mark.parametrize(
    "configured, explicit, workers, shards",
    [
        (2, False, 8, 8),  # the preset's 2 raised to one shard per worker
        (4, False, 2, 4),  # never lowered below the preset's
        (2, True, 8, 2),  # the user's --set mine.shards / --shards is kept
        (1, True, 16, 1),
    ],
)
def test_the_default_shard_count_follows_the_workers(
    configured: int, explicit: bool, workers: int, shards: int
) -> None:
    from joindet.flows.runners import resolved_shards

    assert resolved_shards(configured, explicit, workers) == shards


def test_the_workers_of_an_existing_cluster_are_asked_from_its_scheduler() -> None:
    from distributed import LocalCluster

    from joindet.flows.runners import _cluster_workers, worker_count

    with LocalCluster(n_workers=3, processes=False, protocol="tcp", dashboard_address=None) as cluster:
        assert worker_count(RunnerChoice(dask_address=cluster.scheduler_address)) == 3
    # nobody there: no count (the configured shards stay), once the probe's timeout has passed
    assert _cluster_workers("tcp://127.0.0.1:9", timeout=1) is None
