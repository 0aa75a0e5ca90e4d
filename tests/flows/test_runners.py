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
