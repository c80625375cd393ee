"""BatchCancelledSensor and ThreadRunCancelledSensor in real DAG runs against the emulator."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_psopenai.exceptions import PSOpenAIError
from airflow_psopenai.sensors import BatchCancelledSensor
from airflow_psopenai.testing import Fault

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

MODES = ["poke", "reschedule", "deferrable"]
# Airflow 3.0's dag.test() hands a rescheduled sensor its first reschedule date as text (its in-process
# supervisor skips the validation a deployment's does), which Airflow's own BaseSensorOperator.execute
# cannot subtract from a datetime: a sensor that is rescheduled twice and then pokes False fails there.
TWO_RESCHEDULES = pytest.mark.skipif(
    not AIRFLOW_V_3_1_PLUS,
    reason="Airflow 3.0's dag.test() cannot reschedule a sensor twice (first reschedule date given as text)",
)
MODES_RESCHEDULED_TWICE = ["poke", pytest.param("reschedule", marks=TWO_RESCHEDULES), "deferrable"]


@pytest.mark.parametrize("mode", MODES)
def test_waits_through_cancelling_and_passes_the_batch_on(emulator: OpenAIEmulator, run_dag: RunDag, mode: str) -> None:
    emulator.cancel_delay = 1.0
    batch = emulator.create_batch(status="cancelling")
    result = run_dag(f"sensor_batch_{mode}", batch_id=batch["id"])
    assert result.state == "success", result.task_states
    cancelled = result.xcom("cancelled")
    assert cancelled["status"] == "cancelled"
    recovered = result.xcom("partial_results")
    assert recovered["request_counts"] == cancelled["request_counts"]
    assert recovered["output_file_id"] == cancelled["output_file_id"]
    assert emulator.requests(method="POST") == []  # a sensor never cancels


@pytest.mark.parametrize("mode", MODES)
def test_a_first_check_that_finds_it_cancelled_logs_the_outcome_line(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], mode: str
) -> None:
    batch = emulator.create_batch(status="cancelled")
    result = run_dag(f"sensor_batch_{mode}", batch_id=batch["id"])
    assert result.state == "success", result.task_states
    assert re.search(rf"batch '{batch['id']}' is cancelled \(after \d+\.\d s\)\.", captured_logs())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", ["completed", "failed", "expired"])
def test_fails_at_once_on_another_settled_status(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], mode: str, status: str
) -> None:
    batch = emulator.create_batch(status=status)
    result = run_dag(f"sensor_batch_{mode}", batch_id=batch["id"])  # timeout 30 s: no waiting for it
    assert result.task_states["cancelled"] == "failed"
    assert f"settled as '{status}', so it will never be cancelled" in captured_logs()
    assert len(emulator.requests(method="GET")) == 1


@pytest.mark.parametrize("mode", MODES)
def test_race_to_completed_fails_the_deferred_or_poked_wait(
    emulator: OpenAIEmulator, run_dag: RunDag, mode: str
) -> None:
    emulator.cancel_delay = 0.5
    batch = emulator.create_batch(status="cancelling", race_to="completed")
    result = run_dag(f"sensor_batch_{mode}", batch_id=batch["id"])
    assert result.task_states["cancelled"] == "failed"


@pytest.mark.parametrize("mode", MODES)
def test_soft_fail_skips_on_another_settled_status(emulator: OpenAIEmulator, run_dag: RunDag, mode: str) -> None:
    batch = emulator.create_batch(status="completed")
    result = run_dag(f"sensor_batch_{mode}_soft_fail", batch_id=batch["id"])
    assert result.task_states["cancelled"] == "skipped"


@pytest.mark.parametrize("mode", MODES)
def test_timeout_fails_and_soft_fail_skips(emulator: OpenAIEmulator, run_dag: RunDag, mode: str) -> None:
    emulator.cancel_delay = 60
    batch = emulator.create_batch(status="cancelling")
    assert run_dag(f"sensor_batch_{mode}_timeout", batch_id=batch["id"]).task_states["cancelled"] == "failed"
    assert len(emulator.requests(method="GET")) >= 2  # it kept polling until the timeout
    assert run_dag(f"sensor_batch_{mode}_soft_fail", batch_id=batch["id"]).task_states["cancelled"] == "skipped"


@pytest.mark.parametrize("mode", MODES_RESCHEDULED_TWICE)
def test_transient_errors_count_as_not_yet(emulator: OpenAIEmulator, run_dag: RunDag, mode: str) -> None:
    emulator.cancel_delay = 1.0
    batch = emulator.create_batch(status="cancelling")
    emulator.add_fault(Fault.server_error(503), method="GET", times=1)
    emulator.add_fault(Fault.rate_limit(retry_after_ms=10), method="GET", times=1)
    emulator.add_fault(Fault.drop(), method="GET", times=1)
    result = run_dag(f"sensor_batch_{mode}", batch_id=batch["id"])  # max_retry_count=0
    assert result.state == "success", result.task_states
    statuses = [e.status for e in emulator.requests(method="GET")]
    assert statuses[:3] == [503, 429, None]
    assert statuses[-1] == 200


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["", "_soft_fail"])  # soft_fail skips a settled status, not a wrong setup
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.insufficient_quota(), "out of quota"),
        (Fault.server_error(503, should_retry=False), "server error"),
    ],
)
def test_permanent_errors_fail_at_once(
    emulator: OpenAIEmulator,
    run_dag: RunDag,
    captured_logs: Callable[[], str],
    mode: str,
    variant: str,
    fault: Fault,
    message: str,
) -> None:
    batch = emulator.create_batch(status="cancelling")
    emulator.add_fault(fault, method="GET", times=5)
    result = run_dag(f"sensor_batch_{mode}{variant}", batch_id=batch["id"])
    assert result.task_states["cancelled"] == "failed"
    assert message in captured_logs()
    assert len(emulator.requests(method="GET")) == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", ["", "_soft_fail"])
def test_unknown_batch_fails_at_once(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], mode: str, variant: str
) -> None:
    result = run_dag(f"sensor_batch_{mode}{variant}", batch_id="batch_does_not_exist")
    assert result.task_states["cancelled"] == "failed"
    assert "batch 'batch_does_not_exist' was not found" in captured_logs()


@pytest.mark.parametrize("mode", MODES)
def test_never_fail_skips_a_permanent_error_in_every_mode(emulator: OpenAIEmulator, run_dag: RunDag, mode: str) -> None:
    result = run_dag(f"sensor_batch_{mode}_never_fail", batch_id="batch_does_not_exist")
    assert result.task_states["cancelled"] == "skipped"


def deferred_sensor(**kwargs: Any) -> BatchCancelledSensor:
    return BatchCancelledSensor(task_id="cancelled", batch_id="batch_1", deferrable=True, **kwargs)


def settled(status: str, batch_id: str = "batch_1") -> dict[str, Any]:
    return {"status": "settled", "resource": "batch", "ids": {"batch_id": batch_id}, "object": {"status": status}}


@pytest.mark.parametrize(
    ("event", "outcome"),
    [
        ({"status": "error", "message": "The API key of connection 'x' was refused"}, PSOpenAIError),
        ({"status": "timeout", "message": "did not settle"}, AirflowSkipException),
        (settled("completed"), AirflowSkipException),
    ],
)
def test_resumed_soft_fail_sensor_skips_what_poke_mode_skips(event: dict[str, Any], outcome: type[Exception]) -> None:
    with pytest.raises(outcome):
        deferred_sensor(soft_fail=True).resume_execution("execute_complete", {"event": event}, context={})  # type: ignore[arg-type]


def test_resumed_sensor_returns_the_cancelled_batch() -> None:
    event = settled("cancelled")
    assert deferred_sensor().resume_execution("execute_complete", {"event": event}, context={}) == {  # type: ignore[arg-type]
        "status": "cancelled"
    }


@pytest.mark.parametrize(
    "event",
    [
        None,
        {"status": "done"},
        {"status": "timeout"},
        {"status": "error", "message": None},
        settled("cancelled", batch_id="batch_other"),
        {**settled("cancelled"), "resource": "response"},
    ],
)
def test_resumed_sensor_refuses_events_it_does_not_understand(event: Any) -> None:
    with pytest.raises(ValueError, match="trigger sent"):
        deferred_sensor(soft_fail=True).resume_execution("execute_complete", {"event": event}, context={})  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_thread_run_sensor(emulator: OpenAIEmulator, run_dag: RunDag, mode: str) -> None:
    run = emulator.create_thread_run(status="cancelling")
    result = run_dag(f"sensor_run_{mode}", thread_id=run["thread_id"], run_id=run["id"])
    assert result.state == "success", result.task_states
    assert result.xcom("cancelled")["status"] == "cancelled"


def test_response_sensor_passes_the_cancelled_response_on(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    response = emulator.create_response(status="cancelled")
    result = run_dag("sensor_response_deferrable", response_id=response["id"])
    assert result.state == "success", result.task_states
    assert result.xcom("cancelled")["id"] == response["id"]


@pytest.mark.parametrize("mode", MODES)
def test_a_hanging_poke_ends_at_the_sensor_timeout(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], mode: str
) -> None:
    """timeout=1 and timeout_sec unset: the poke's call is bounded by the sensor's timeout, not held for ever."""
    emulator.cancel_delay = 60
    batch = emulator.create_batch(status="cancelling")
    emulator.add_fault(Fault.hang(), method="GET")
    result = run_dag(f"sensor_batch_{mode}_timeout", batch_id=batch["id"])
    assert result.task_states["cancelled"] == "failed"
    # One wording in the worker and the triggerer.
    assert f"batch {batch['id']!r} did not settle before the sensor's timeout of 1 s" in captured_logs()
    assert result.ended_at["cancelled"] - emulator.journal[0].time < 1 + 3  # not the hang's minute
