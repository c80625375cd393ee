"""PSOpenAIHook.create_fine_tuning_job: the API's create parameters, the run tags, and a retry that takes over the
job its first try created (found by a list the server filters by the run tags: one request), in real DAG runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.hooks import PSOpenAIHook

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]


def job_posts(emulator: OpenAIEmulator) -> int:
    return len(emulator.requests(method="POST", path="/v1/fine_tuning/jobs"))


def test_a_retry_returns_the_job_its_first_try_created(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    emulator.create_fine_tuning_job(metadata={"airflow_dag_id": "another"}, training_file="file-retried")
    result = run_dag("create_fine_tuning_job_retried", training_file="file-retried")
    assert result.task_states["create"] == "success"
    assert result.tries["create"] == 2
    assert job_posts(emulator) == 1
    job = emulator.get_fine_tuning_job(result.xcom("create"))
    assert (job["training_file"], job["model"]) == ("file-retried", "gpt-4o-mini-2024-07-18")
    assert job["metadata"]["airflow_task_id"] == "create"
    assert job["metadata"]["airflow_run_id"] == result.dag_run.run_id
    # One request per try: the server filters the list by the run tags.
    lists = emulator.requests(method="GET", path="/v1/fine_tuning/jobs")
    assert len(lists) == 2
    assert lists[0].query["metadata[airflow_dag_id]"] == "create_fine_tuning_job_retried"
    assert lists[0].query["metadata[airflow_task_id]"] == "create"
    assert f"Fine-tuning job {job['id']!r} (validating_files) was created by an earlier try" in captured_logs()


def test_reuse_earlier_job_false_creates_a_second_job(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("create_fine_tuning_job_retried_no_reuse", training_file="file-again")
    assert result.task_states["create"] == "success"
    assert job_posts(emulator) == 2
    assert emulator.requests(method="GET", path="/v1/fine_tuning/jobs") == []


def test_the_create_parameters_are_sent_as_given(emulator: OpenAIEmulator) -> None:
    hook = PSOpenAIHook()
    try:
        job = hook.create_fine_tuning_job(
            "gpt-4o-mini-2024-07-18",
            "file-train",
            validation_file="file-valid",
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
            suffix="demo",
            seed=3,
            metadata={"team": "data"},
        )
    finally:
        hook.close()
    assert (job["validation_file"], job["seed"], job["metadata"]) == ("file-valid", 3, {"team": "data"})
    assert job["method"]["supervised"]["hyperparameters"] == {"n_epochs": 2}
    assert emulator.requests(method="GET") == []  # outside a task nothing is looked for


def test_metadata_over_the_limit_is_refused_before_any_request(emulator: OpenAIEmulator) -> None:
    hook = PSOpenAIHook()
    with pytest.raises(PSOpenAIConfigurationError, match="at most 16 pairs"):
        hook.create_fine_tuning_job("m", "file-train", metadata={f"k{n}": "v" for n in range(17)})
    assert emulator.journal == []
