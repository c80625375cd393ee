"""StopFineTuningJobOperator, StopEvalRunOperator and StopVectorStoreFileBatchOperator in real DAG runs (dag.test)
against the emulator (tests/dags/psopenai_kinds_dags.py): one generic body over the resource table, so every
option means for them what it means for a batch, with each kind's own cancel path and status spelling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.resources import EVAL_RUN, FINE_TUNING_JOB, VECTOR_STORE_FILE_BATCH, CancellableResource

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

KINDS = [FINE_TUNING_JOB, EVAL_RUN, VECTOR_STORE_FILE_BATCH]
# What each kind's finished object says ran, as its settled outcome's log line names it.
WHAT_RAN = {
    FINE_TUNING_JOB.name: "trained_tokens ",
    EVAL_RUN.name: "result_counts {",
    VECTOR_STORE_FILE_BATCH.name: "file_counts {",
}
# The end each kind can reach instead of its cancel, for a cancel that loses the race.
RACE_END = {FINE_TUNING_JOB.name: "succeeded", EVAL_RUN.name: "completed", VECTOR_STORE_FILE_BATCH.name: "completed"}


def create(emulator: OpenAIEmulator, kind: CancellableResource, **kwargs: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """Create one object of ``kind`` in the emulator; return it and its IDs (the DAG run's conf)."""
    if kind is FINE_TUNING_JOB:
        obj = emulator.create_fine_tuning_job(**kwargs)
    elif kind is EVAL_RUN:
        obj = emulator.create_eval_run("eval_1", **kwargs)
    else:
        obj = emulator.create_vector_store_file_batch("vs_1", **kwargs)
    ids = {name: str(value) for name, value in kind.ids_from_object(obj).items()}
    return obj, ids


def cancels(emulator: OpenAIEmulator, kind: CancellableResource, ids: dict[str, str]) -> int:
    return len(emulator.requests(method=kind.cancel_method, path="/v1" + kind.cancel_path(ids)))


def status(emulator: OpenAIEmulator, kind: CancellableResource, ids: dict[str, str]) -> str:
    getter = {
        FINE_TUNING_JOB.name: emulator.get_fine_tuning_job,
        EVAL_RUN.name: emulator.get_eval_run,
        VECTOR_STORE_FILE_BATCH.name: emulator.get_vector_store_file_batch,
    }[kind.name]
    return str(getter(*ids.values())["status"])


@pytest.fixture(params=KINDS, ids=lambda kind: kind.name)
def kind(request: pytest.FixtureRequest) -> CancellableResource:
    resource: CancellableResource = request.param
    return resource


def test_cancel_once_by_id_with_the_kinds_own_path(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource, captured_logs: Callable[[], str]
) -> None:
    _, ids = create(emulator, kind)
    result = run_dag(f"stop_{kind.name}", **ids)
    assert result.state == "success"
    assert result.xcom("stop") is None  # no pass_through
    assert cancels(emulator, kind, ids) == 1
    assert status(emulator, kind, ids) == kind.cancelled_status
    logs = captured_logs()
    assert f"status is now {kind.cancelled_status}. What ran: {WHAT_RAN[kind.name]}" in logs


def test_eval_run_is_cancelled_by_a_post_to_the_run_itself(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    _, ids = create(emulator, EVAL_RUN)
    assert run_dag("stop_eval_run_pass_through", **ids).xcom("stop")["status"] == "canceled"
    (cancel,) = emulator.requests(method="POST")
    assert cancel.path == f"/v1/evals/eval_1/runs/{ids['run_id']}"


def test_pass_through_returns_the_cancel_answer(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource
) -> None:
    obj, ids = create(emulator, kind)
    returned = run_dag(f"stop_{kind.name}_pass_through", **ids).xcom("stop")
    assert (returned["id"], returned["status"]) == (obj["id"], kind.cancelled_status)


@pytest.mark.parametrize("wait", ["_wait", "_wait_deferrable"])
def test_a_wait_ends_at_once_on_a_cancel_answered_cancelled(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource, wait: str
) -> None:
    _, ids = create(emulator, kind)
    result = run_dag(f"stop_{kind.name}{wait}", **ids)
    assert result.state == "success"
    assert result.xcom("stop")["status"] == kind.cancelled_status
    # The look, the cancel, no poll: nothing is left to wait for.
    assert [entry.method for entry in emulator.journal] == ["GET", kind.cancel_method]


@pytest.mark.parametrize("wait", ["_wait", "_wait_deferrable"])
def test_a_wait_follows_a_cancel_that_loses_the_race_and_says_why_it_is_not_cancelled(
    emulator: OpenAIEmulator,
    run_dag: RunDag,
    kind: CancellableResource,
    wait: str,
    captured_logs: Callable[[], str],
) -> None:
    end = RACE_END[kind.name]
    emulator.cancel_delay = 1.0
    _, ids = create(emulator, kind, race_to=end)
    result = run_dag(f"stop_{kind.name}{wait}", **ids)
    assert result.state == "success"
    assert result.xcom("stop")["status"] == end
    assert cancels(emulator, kind, ids) == 1
    assert len(emulator.requests(method="GET")) >= 2  # the look, then polls until it ended
    logs = captured_logs()
    assert f"settled as '{end}', not cancelled" in logs
    assert f"is {end} (after " in logs
    assert f"What ran: {WHAT_RAN[kind.name]}" in logs


def test_a_deferred_wait_ends_at_its_timeout(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource, captured_logs: Callable[[], str]
) -> None:
    emulator.cancel_delay = 10.0**6
    _, ids = create(emulator, kind, race_to=RACE_END[kind.name])
    result = run_dag(f"stop_{kind.name}_wait_timeout_deferrable", **ids)
    assert result.task_states["stop"] == "failed"
    assert "did not settle before its wait_timeout of 1 s" in captured_logs()
    assert cancels(emulator, kind, ids) == 1


@pytest.mark.parametrize("settled", ["ended", "cancelled"])
def test_a_settled_object_fails_succeeds_or_skips_without_a_cancel(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource, settled: str, captured_logs: Callable[[], str]
) -> None:
    found = RACE_END[kind.name] if settled == "ended" else kind.cancelled_status
    for suffix, verdict in (("", "failed"), ("_succeed", "success"), ("_skip", "skipped")):
        _, ids = create(emulator, kind, status=found)
        result = run_dag(f"stop_{kind.name}{suffix}", **ids)
        assert result.task_states["stop"] == verdict, suffix
        assert cancels(emulator, kind, ids) == 0
    assert f'Cannot cancel {kind.label} with status "{found}"' in captured_logs()


def test_force_on_an_ended_object_reports_the_apis_refusal(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource, captured_logs: Callable[[], str]
) -> None:
    end = RACE_END[kind.name]
    _, ids = create(emulator, kind, status=end)
    result = run_dag(f"stop_{kind.name}_force", **ids)
    assert result.task_states["stop"] == "failed"
    assert cancels(emulator, kind, ids) == 1
    assert f'Cannot cancel {kind.label} with status "{end}": the API refused' in captured_logs()


def test_cancel_by_object(emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource) -> None:
    obj, ids = create(emulator, kind)
    result = run_dag(f"stop_{kind.name}_by_object", object=obj)
    assert result.xcom("stop")["status"] == kind.cancelled_status
    assert cancels(emulator, kind, ids) == 1
