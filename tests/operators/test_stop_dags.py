"""StopBatchOperator and StopThreadRunOperator in real DAG runs (dag.test) against the emulator."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.testing import Fault

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

SETTLED_BATCH_STATUSES = ["completed", "failed", "expired", "cancelled"]


def cancels(emulator: OpenAIEmulator) -> list[str]:
    return [entry.path for entry in emulator.requests(method="POST", path="*/cancel")]


def test_cancel_by_id(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batch = emulator.create_batch()
    result = run_dag("stop_batch", batch_id=batch["id"])
    assert result.state == "success"
    assert cancels(emulator) == [f"/v1/batches/{batch['id']}/cancel"]
    assert emulator.get_batch(batch["id"])["status"] in ("cancelling", "cancelled")
    assert result.xcom("stop") is None  # no pass_through


def test_pass_through_returns_cancel_answer(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    emulator.cancel_delay = 30
    batch = emulator.create_batch()
    result = run_dag("stop_batch_pass_through", batch_id=batch["id"])
    assert result.state == "success"
    returned = result.xcom("stop")
    assert returned["id"] == batch["id"]
    assert returned["status"] == "cancelling"


@pytest.mark.parametrize("dag_id", ["stop_batch_wait", "stop_batch_wait_deferrable"])
def test_wait_returns_settled_object(emulator: OpenAIEmulator, run_dag: RunDag, dag_id: str) -> None:
    batch = emulator.create_batch()
    result = run_dag(dag_id, batch_id=batch["id"])
    assert result.state == "success"
    returned = result.xcom("stop")
    assert returned["status"] == "cancelled"
    assert returned["cancelled_at"] is not None
    assert len(cancels(emulator)) == 1


@pytest.mark.parametrize("dag_id", ["stop_batch_wait", "stop_batch_wait_deferrable"])
def test_race_to_completed_is_reported_as_completed(
    emulator: OpenAIEmulator, run_dag: RunDag, dag_id: str, captured_logs: Callable[[], str]
) -> None:
    batch = emulator.create_batch(race_to="completed")
    result = run_dag(dag_id, batch_id=batch["id"])
    assert result.state == "success"
    assert result.xcom("stop")["status"] == "completed"
    assert "settled as 'completed', not cancelled" in captured_logs()


@pytest.mark.parametrize(
    ("dag_id", "limit", "message"),
    [
        ("stop_batch_wait_timeout", 1, "did not settle before its wait_timeout of 1 s (last status: cancelling)"),
        (
            "stop_batch_wait_timeout_deferrable",
            1,
            "did not settle before its wait_timeout of 1 s (last status: cancelling)",
        ),
        ("stop_batch_wait_execution_timeout_deferrable", 1, "did not settle before its execution_timeout of 1 s"),
    ],
)
def test_wait_timeout_fails_the_task(
    emulator: OpenAIEmulator,
    run_dag: RunDag,
    captured_logs: Callable[[], str],
    dag_id: str,
    limit: float,
    message: str,
) -> None:
    emulator.cancel_delay = 60
    batch = emulator.create_batch()
    result = run_dag(dag_id, batch_id=batch["id"])
    assert result.task_states["stop"] == "failed"
    assert "PSOpenAIWaitTimeoutError" in captured_logs()
    assert message in captured_logs()
    cancel_at = emulator.requests(method="POST", path="*/cancel")[0].time
    last_poll_at = emulator.journal[-1].time
    # The last poll came at the deadline: not before it, and the polling did not go on past it.
    assert limit <= last_poll_at - cancel_at < limit + 2
    assert emulator.get_batch(batch["id"])["status"] == "cancelling"


@pytest.mark.parametrize("dag_id", ["stop_batch_wait_long_interval", "stop_batch_wait_long_interval_deferrable"])
def test_an_object_settled_before_the_deadline_is_seen_by_a_poll_at_it(
    emulator: OpenAIEmulator, run_dag: RunDag, dag_id: str
) -> None:
    """poll_interval=60 with wait_timeout=1.5: after the first quick polls, the next is made at the deadline."""
    emulator.cancel_delay = 1.0
    batch = emulator.create_batch()
    result = run_dag(dag_id, batch_id=batch["id"])
    assert result.state == "success"
    assert result.xcom("stop")["status"] == "cancelled"


@pytest.mark.parametrize("status", SETTLED_BATCH_STATUSES)
def test_default_fails_on_a_settled_batch_without_cancelling(
    emulator: OpenAIEmulator, run_dag: RunDag, status: str, captured_logs: Callable[[], str]
) -> None:
    batch = emulator.create_batch(status=status)
    result = run_dag("stop_batch", batch_id=batch["id"])
    assert result.task_states["stop"] == "failed"
    assert f'Cannot cancel batch with status "{status}"' in captured_logs()
    assert cancels(emulator) == []


@pytest.mark.parametrize("status", SETTLED_BATCH_STATUSES)
def test_cleanup_choice_succeeds_on_a_settled_batch(emulator: OpenAIEmulator, run_dag: RunDag, status: str) -> None:
    batch = emulator.create_batch(status=status)
    result = run_dag("stop_batch_succeed", batch_id=batch["id"])
    assert result.task_states["stop"] == "success"
    assert result.xcom("stop")["status"] == status
    assert cancels(emulator) == []


@pytest.mark.parametrize("status", SETTLED_BATCH_STATUSES)
def test_skip_choice_skips_on_a_settled_batch(emulator: OpenAIEmulator, run_dag: RunDag, status: str) -> None:
    batch = emulator.create_batch(status=status)
    result = run_dag("stop_batch_skip", batch_id=batch["id"])
    assert result.task_states["stop"] == "skipped"
    assert cancels(emulator) == []


def test_cleanup_choice_waits_for_a_batch_already_cancelling(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batch = emulator.create_batch(status="cancelling")
    # The task's look sees it cancelling however slow its start; its polls then see the batch as it is,
    # settled 0.2 s after it was made.
    emulator.add_fault(Fault.answer(200, json.dumps(batch)), method="GET")
    result = run_dag("stop_batch_succeed_wait", batch_id=batch["id"])
    assert result.task_states["stop"] == "success"
    assert result.xcom("stop")["status"] == "cancelled"
    assert cancels(emulator) == []
    assert len(emulator.requests(method="GET")) >= 2  # it looked, found it cancelling, and waited


def test_force_on_a_completed_batch_reports_the_real_status(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    batch = emulator.create_batch(status="completed")
    result = run_dag("stop_batch_force", batch_id=batch["id"])
    assert result.task_states["stop"] == "failed"
    logs = captured_logs()
    assert 'Cannot cancel batch with status "completed"' in logs
    assert "HTTP 409" in logs
    assert len(cancels(emulator)) == 1
    assert emulator.requests(method="GET") == []  # force: no retrieve before the cancel


def test_force_with_cleanup_choice_succeeds_on_a_completed_batch(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batch = emulator.create_batch(status="completed")
    result = run_dag("stop_batch_force_succeed", batch_id=batch["id"])
    assert result.task_states["stop"] == "success"
    assert result.xcom("stop")["status"] == "completed"


def test_force_on_a_running_batch_cancels_without_retrieving(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batch = emulator.create_batch()
    result = run_dag("stop_batch_force", batch_id=batch["id"])
    assert result.state == "success"
    assert result.xcom("stop")["status"] == "cancelling"
    assert [e.method for e in emulator.journal] == ["POST"]


def test_cancel_is_retried_on_rate_limit(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.rate_limit(retry_after_ms=50), method="POST", path="/v1/batches/*/cancel", times=2)
    result = run_dag("stop_batch_retries", batch_id=batch["id"])
    assert result.state == "success"
    assert [e.status for e in emulator.requests(method="POST")] == [429, 429, 200]


def test_cancel_by_templated_xcom_pull(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batch = emulator.create_batch()
    result = run_dag("stop_batch_xcom_template", batch=batch)
    assert result.state == "success"
    assert result.xcom("stop")["id"] == batch["id"]


@pytest.mark.parametrize(
    "dag_id", ["stop_batch_xcom_object_text", "stop_batch_xcom_native", "stop_batch_xcomarg", "stop_batch_xcomarg_key"]
)
def test_cancel_by_object_and_xcomarg(emulator: OpenAIEmulator, run_dag: RunDag, dag_id: str) -> None:
    batch = emulator.create_batch()
    result = run_dag(dag_id, batch=batch)
    assert result.state == "success", result.task_states
    assert result.xcom("stop")["status"] == "cancelling"
    assert cancels(emulator) == [f"/v1/batches/{batch['id']}/cancel"]


def test_mapped_over_20_batches(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batch_ids = [str(emulator.create_batch()["id"]) for _ in range(20)]
    result = run_dag("stop_batch_mapped", batch_ids=batch_ids)
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(f"/v1/batches/{b}/cancel" for b in batch_ids)
    assert [result.xcom("stop", map_index=i)["id"] for i in range(20)] == batch_ids


def test_thread_run_wait(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    run = emulator.create_thread_run()
    result = run_dag("stop_run_wait", thread_id=run["thread_id"], run_id=run["id"])
    assert result.state == "success"
    assert result.xcom("stop")["status"] == "cancelled"
    assert all(e.headers.get("openai-beta") == "assistants=v2" for e in emulator.journal)


def test_thread_run_by_object(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    run = emulator.create_thread_run(status="queued")
    result = run_dag("stop_run_by_object", run=run)
    assert result.state == "success"
    assert cancels(emulator) == [f"/v1/threads/{run['thread_id']}/runs/{run['id']}/cancel"]


def test_background_response_cancel_and_wait(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    response = emulator.create_response(status="in_progress")
    result = run_dag("stop_response_wait", response_id=response["id"])
    assert result.state == "success"
    assert result.xcom("stop")["status"] == "cancelled"
    assert cancels(emulator) == [f"/v1/responses/{response['id']}/cancel"]


def test_synchronous_response_cannot_be_cancelled(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    response = emulator.create_response(status="in_progress", background=False)
    result = run_dag("stop_response_wait", response_id=response["id"])
    assert result.task_states["stop"] == "failed"
    assert (
        f"Cannot cancel response {response['id']!r}: the API answered its cancel with not found "
        "(Cannot cancel a synchronous response, HTTP 404"
    ) in captured_logs()
    assert "only responses created with background=true can be cancelled, or the ID is wrong" in captured_logs()


BAD_NATIVE_INPUTS: list[tuple[dict[str, Any], str]] = [
    ({}, "batch_id is None and batch is not given"),
    ({"batch_id": None}, "batch_id is None and batch is not given"),
    # Native rendering turns the text None into None.
    ({"batch_id": "None"}, "batch_id is None and batch is not given"),
    ({"batch_id": ""}, "batch_id is empty"),
    ({"batch_id": "   "}, "batch_id is empty"),
    ({"batch_id": ["batch_a", "batch_b"]}, "batch_id rendered to a list"),
    ({"batch_id": 42}, "batch_id must be a string ID, got int 42"),
    ({"batch": {"status": "in_progress"}}, "batch has no 'id' key"),
    ({"batch": ["batch_a"]}, "batch must be an object (dict)"),
    ({"batch": {"id": None}}, "batch['id'] is None"),
    ({"batch_id": "batch_a", "batch": {"id": "batch_a"}}, "Give either batch= or batch_id, not both"),
]


@pytest.mark.parametrize(("conf", "message"), BAD_NATIVE_INPUTS, ids=[m for _, m in BAD_NATIVE_INPUTS])
def test_bad_rendered_input_fails_before_any_request(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], conf: dict[str, Any], message: str
) -> None:
    result = run_dag("stop_batch_native_input", **conf)
    assert result.task_states["stop"] == "failed"
    assert message in captured_logs()
    assert emulator.journal == []


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({}, "batch_id rendered to the string 'None'"),
        ({"batch_id": ["batch_a", "batch_b"]}, "batch_id rendered to a list"),
    ],
)
def test_bad_text_rendered_input_fails_before_any_request(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], conf: dict[str, Any], message: str
) -> None:
    result = run_dag("stop_batch_text_input", **conf)
    assert result.task_states["stop"] == "failed"
    assert message in captured_logs()
    assert emulator.journal == []


def test_key_absent_from_logs_and_rendered_fields(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """A proxy's error page quotes the request's headers, the key with them: the task log must not."""
    batch = emulator.create_batch()
    emulator.add_fault(Fault.server_error(502, echo_headers=True), method="POST")
    result = run_dag("stop_batch", batch_id=batch["id"])
    assert result.task_states["stop"] == "failed"
    from tests.conftest import without_airflows_mask_requests

    logs = without_airflows_mask_requests(captured_logs())
    assert "Request headers" in logs  # the echoed page reached the task's error
    assert '"authorization": "Bearer ***"' in logs
    assert emulator.api_key not in logs
    assert emulator.api_key[-12:] not in logs
    rendered = result.rendered_fields("stop")
    assert rendered["batch_id"] == batch["id"]
    assert emulator.api_key not in repr(rendered)
