"""The resource table: each kind's cancel path and method, its status spelling, what its settled objects say ran;
how messages word counts."""

from __future__ import annotations

import pytest

from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import (
    BATCH,
    EVAL_RUN,
    FINE_TUNING_JOB,
    RESOURCES,
    VECTOR_STORE_FILE_BATCH,
    CancellableResource,
    counted,
)


def test_each_kind_names_its_cancel() -> None:
    assert FINE_TUNING_JOB.cancel_path({"fine_tuning_job_id": "ftjob-1"}) == "/fine_tuning/jobs/ftjob-1/cancel"
    assert EVAL_RUN.cancel_path({"eval_id": "eval/1", "run_id": ".."}) == "/evals/eval%2F1/runs/%2E%2E"
    assert VECTOR_STORE_FILE_BATCH.cancel_path({"vector_store_id": "vs_1", "batch_id": "vsfb_2"}) == (
        "/vector_stores/vs_1/file_batches/vsfb_2/cancel"
    )
    assert {resource.cancel_method for resource in RESOURCES.values()} == {"POST"}


def test_every_entry_is_consistent() -> None:
    for resource in RESOURCES.values():
        assert resource.cancelled_status in resource.settled & resource.cancel_requested, resource.name
        assert resource.cancellable <= resource.statuses and resource.settled <= resource.statuses
        assert not resource.cancellable & resource.settled
        assert set(resource.object_keys) == set(resource.id_fields)
        assert resource.cost_fields, resource.name
    assert EVAL_RUN.cancelled_status == "canceled"


def test_what_ran_names_the_cost_fields_that_are_set() -> None:
    batch = {"request_counts": {"total": 10, "completed": 3, "failed": 0}, "usage": None}
    assert BATCH.what_ran(batch) == 'request_counts {"completed": 3, "failed": 0, "total": 10}'
    assert FINE_TUNING_JOB.what_ran({"trained_tokens": 4200}) == "trained_tokens 4200"
    assert FINE_TUNING_JOB.what_ran({"trained_tokens": None}) == ""


@pytest.mark.parametrize("resource", [BATCH, EVAL_RUN, VECTOR_STORE_FILE_BATCH], ids=lambda r: r.name)
def test_a_metadata_filter_is_refused_for_a_list_without_one(resource: CancellableResource) -> None:
    # Refused before the settings (the connection) are needed.
    with pytest.raises(PSOpenAIConfigurationError):
        PSOpenAIHook._list_call(None, resource, None, 10, {"k": "v"})  # type: ignore[arg-type]


def test_the_fine_tuning_jobs_page_is_its_console_link() -> None:
    assert FINE_TUNING_JOB.console_page({"fine_tuning_job_id": "ftjob-1/x"}) == (
        "https://platform.openai.com/finetune/ftjob-1%2Fx"
    )
    assert EVAL_RUN.console_page({"eval_id": "eval_1", "run_id": "evalrun_2"}) is None


@pytest.mark.parametrize(
    ("count", "noun", "expected"),
    [
        (1, "batch", "1 batch"),
        (2, "batch", "2 batches"),
        (0, "batch", "0 batches"),
        (1, "cancel", "1 cancel"),
        (3, "cancel", "3 cancels"),
        (1, "page", "1 page"),
        (2, "page", "2 pages"),
    ],
)
def test_a_count_takes_the_singular_only_for_one(count: int, noun: str, expected: str) -> None:
    assert counted(count, noun) == expected
