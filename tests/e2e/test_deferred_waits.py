"""A deferrable cancel-and-wait and a deferrable sensor on a real Airflow: the waits run in the triggerer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack, RunResult

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DAG_ID = "e2e_psopenai_deferred"


def polls_while_deferred(result: RunResult, task: str, polls: list[float]) -> list[float]:
    """Return the polls that arrived while two consecutive looks saw the task ``deferred`` (no worker runs it)."""
    windows = result.deferred_windows(task)
    return [at for at in polls if any(start < at < end for start, end in windows)]


def test_deferred_wait_and_sensor_poll_from_the_triggerer(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    # Long enough for the waits to be seen deferred and to poll several times, and for the sensor to
    # start (after stop_only) while the batch is still cancelling, even on a busy machine.
    stack.emulator_settings(cancel_delay=15)
    stop_batch = stack.create_batch()["id"]
    sensed_batch = stack.create_batch()["id"]

    run_id = stack.trigger(DAG_ID, {"stop_batch_id": stop_batch, "sensed_batch_id": sensed_batch})
    result = stack.wait_run(DAG_ID, run_id)

    assert result.state == "success", result.states
    assert result.states == {"stop_and_wait": "success", "stop_only": "success", "sensor": "success"}
    for batch_id in (stop_batch, sensed_batch):
        assert len(stack.batch_cancels(batch_id)) == 1, f"{batch_id} was not cancelled exactly once"
        assert stack.batch(batch_id)["status"] == "cancelled"

    # Both waits went through "deferred", and the batch was polled while no worker ran the task.
    for task, batch_id in (("stop_and_wait", stop_batch), ("sensor", sensed_batch)):
        assert "deferred" in result.seen(task), (task, result.samples[task])
        assert len(polls_while_deferred(result, task, stack.batch_polls(batch_id))) >= 2, (
            f"{task}: no polls of {batch_id} while deferred; deferred {result.deferred_windows(task)}, "
            f"polls {stack.batch_polls(batch_id)}"
        )
        # The polling is the trigger's: its status lines are in the triggerer's log of this task.
        trigger_log = stack.task_log(DAG_ID, run_id, task, trigger=True)
        assert f"batch '{batch_id}' is cancelled" in trigger_log, trigger_log or "no trigger log"
        assert "airflow_psopenai.triggers.status.ResourceStatusTrigger" in trigger_log

    # The sensor pushes the cancelled batch; the stop operator passes the settled batch on.
    assert stack.xcom(DAG_ID, run_id, "sensor")["status"] == "cancelled"
    assert stack.xcom(DAG_ID, run_id, "stop_and_wait")["id"] == stop_batch
    # The worker log of the resumed task shows it ended through execute_complete, not a worker-side wait.
    worker_log = stack.task_log(DAG_ID, run_id, "stop_and_wait", trigger=False)
    assert "Cancel requested for batch" in worker_log
