"""No batch outlives its DAG run, on the real stack: a last try failing, dagrun_timeout, a run marked failed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.checks import CLEANUP_BOUND_SEC, assert_cleaned_up, bystanders
from tests.e2e.stack import wait_until

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_a_task_failing_on_its_last_try_has_its_runs_batches_cancelled(airflow_stack: AirflowStack) -> None:
    stack, dag_id = airflow_stack, "e2e_psopenai_cleanup_last_try"
    untouched = bystanders(stack, dag_id)
    run_id = stack.trigger(dag_id)
    result = stack.wait_run(dag_id, run_id, timeout=240)
    assert result.state == "failed"
    assert result.states == {"create_tagged": "success", "fail_every_try": "failed"}
    assert assert_cleaned_up(stack, dag_id, run_id, untouched, time.time()) < CLEANUP_BOUND_SEC


def test_dagrun_timeout_has_its_runs_batches_cancelled(airflow_stack: AirflowStack) -> None:
    stack, dag_id = airflow_stack, "e2e_psopenai_cleanup_timeout"
    untouched = bystanders(stack, dag_id)
    run_id = stack.trigger(dag_id)
    result = stack.wait_run(dag_id, run_id, timeout=240)
    assert result.state == "failed"
    assert result.states["create_tagged"] == "success"
    assert assert_cleaned_up(stack, dag_id, run_id, untouched, time.time()) < CLEANUP_BOUND_SEC


def test_a_run_marked_failed_through_the_rest_api_has_its_batches_cancelled(airflow_stack: AirflowStack) -> None:
    stack, dag_id = airflow_stack, "e2e_psopenai_cleanup_marked"
    untouched = bystanders(stack, dag_id)
    run_id = stack.trigger(dag_id)

    def working() -> dict[str, Any] | None:
        tis = stack.task_instances(dag_id, run_id)
        return tis if tis.get("work_for_long", {}).get("state") == "running" else None

    wait_until(working, 180, "work_for_long to run")
    marked = time.time()
    stack.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})
    assert assert_cleaned_up(stack, dag_id, run_id, untouched, marked) < CLEANUP_BOUND_SEC
