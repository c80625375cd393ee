"""FineTuningJobCancelledSensor, EvalRunCancelledSensor and VectorStoreFileBatchCancelledSensor in real DAG runs:
after the kind's stop operator, in the worker and deferred (tests/dags/psopenai_kinds_dags.py)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.resources import EVAL_RUN, FINE_TUNING_JOB, VECTOR_STORE_FILE_BATCH, CancellableResource
from tests.operators.test_stop_kinds import RACE_END, WHAT_RAN, create

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

KINDS = [FINE_TUNING_JOB, EVAL_RUN, VECTOR_STORE_FILE_BATCH]
MODES = ["poke", "deferrable"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_the_sensor_passes_the_cancelled_object_on(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource, mode: str, captured_logs: Callable[[], str]
) -> None:
    obj, ids = create(emulator, kind)
    result = run_dag(f"sensor_{kind.name}_{mode}", **ids)
    assert result.task_states == {"stop": "success", "cancelled": "success"}
    passed_on = result.xcom("cancelled")
    assert (passed_on["id"], passed_on["status"]) == (obj["id"], kind.cancelled_status)
    # The outcome line: the status, the seconds since the wait began, and what ran.
    pattern = rf"is {kind.cancelled_status} \(after \d+\.\d s\)\. What ran: {re.escape(WHAT_RAN[kind.name])}"
    assert re.search(pattern, captured_logs()), captured_logs()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_the_sensor_fails_when_the_cancel_lost_the_race(
    emulator: OpenAIEmulator, run_dag: RunDag, kind: CancellableResource, mode: str, captured_logs: Callable[[], str]
) -> None:
    end = RACE_END[kind.name]
    emulator.cancel_delay = 1.0
    _, ids = create(emulator, kind, race_to=end)
    result = run_dag(f"sensor_{kind.name}_{mode}", **ids)
    assert result.task_states == {"stop": "success", "cancelled": "failed"}
    assert f"{kind.describe(ids)} settled as '{end}', so it will never be cancelled." in captured_logs()
    assert len(emulator.requests(method="GET")) >= 3  # the stop's look, then the sensor's polls until it ended
