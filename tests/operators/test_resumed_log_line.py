"""A deferred wait's outcome in the task's own log: the line a wait in the worker ends with, after resuming.

Each DAG really defers: dag.test() runs the trigger in-process, so the trigger's lines are in the
same output; the task's lines are told apart by the task's logger. Airflow 3.1+ writes them to stdout;
3.0 sends this provider's loggers through Python's logging (pytest's caplog) instead.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from airflow_psopenai.testing import Fault

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

DEFERRED = "Pausing task as DEFERRED"


def task_logs(captured_logs: Callable[[], str], caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the run's output and its log records, each as one text: where the lines are depends on the line."""
    return [captured_logs(), caplog.text]


def lines_of(logs: list[str], logger: str, text: str) -> list[str]:
    """Return the lines of ``logger`` holding ``text``, from the first of ``logs`` that has any."""
    for source in logs:
        found = [line for line in source.splitlines() if text in line and logger in line]
        if found:
            return found
    return []


def seconds_in(line: str) -> float:
    match = re.search(r"\(after (\d+\.\d) s\)\.", line)
    assert match, line
    return float(match.group(1))


def test_the_resumed_operator_logs_the_final_status_and_the_time_since_the_wait_began(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    batch = emulator.create_batch()
    result = run_dag("stop_batch_wait_deferrable", batch_id=batch["id"])
    assert result.state == "success"

    logs = task_logs(captured_logs, caplog)
    assert DEFERRED in logs[0]
    outcome = f"batch '{batch['id']}' is cancelled (after "
    (task_line,) = lines_of(logs, "operators.stop.StopBatchOperator", outcome)
    (trigger_line,) = lines_of(logs, "triggers.status.ResourceStatusTrigger", outcome)
    (source,) = [text for text in logs if task_line in text]
    assert source.index(trigger_line) < source.index(task_line)
    # Counted from the deferral: the cancel delay (0.2 s) at least, far less than the run.
    assert 0.2 <= seconds_in(task_line) < 60


def test_the_resumed_set_logs_each_batchs_final_status(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    ids = [emulator.create_batch()["id"] for _ in range(2)]
    result = run_dag("stop_batches_wait_deferrable", batch_ids=ids)
    assert result.state == "success"

    logs = task_logs(captured_logs, caplog)
    assert DEFERRED in logs[0]
    for batch_id in ids:
        (task_line,) = lines_of(logs, "StopBatchesOperator", f"batch '{batch_id}' is cancelled (after ")
        assert 0.2 <= seconds_in(task_line) < 60


def test_the_resumed_sensor_logs_the_cancelled_status(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    run = emulator.create_thread_run(status="cancelled")
    # The sensor's first poke, in the worker, still sees it cancelling: the sensor defers.
    emulator.add_fault(Fault.answer(200, json.dumps({**run, "status": "cancelling"})), method="GET")
    result = run_dag("sensor_run_deferrable", thread_id=run["thread_id"], run_id=run["id"])
    assert result.state == "success", result.task_states

    logs = task_logs(captured_logs, caplog)
    assert DEFERRED in logs[0]
    target = f"run '{run['id']}' of thread '{run['thread_id']}' is cancelled (after "
    (task_line,) = lines_of(logs, "sensors.cancelled.ThreadRunCancelledSensor", target)
    assert 0 <= seconds_in(task_line) < 60
