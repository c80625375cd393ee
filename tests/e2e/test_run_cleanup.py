"""No batch outlives its DAG run, on the real stack: a last try failing, dagrun_timeout, a run marked failed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.stack import wait_until

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

# From the run's failure to every batch of it cancelling: the DAG processor runs the callback on its
# next loop (a few seconds); listing and cancelling three batches takes well under a second.
CLEANUP_BOUND_SEC = 60


def bystanders(stack: AirflowStack, dag_id: str) -> list[str]:
    """Create batches the cleanup must not touch: another run's, and an untagged one."""
    other_run = stack.create_batch(metadata={"airflow_dag_id": dag_id, "airflow_run_id": "another-run"})
    return [str(other_run["id"]), str(stack.create_batch()["id"])]


def assert_cleaned_up(stack: AirflowStack, dag_id: str, run_id: str, untouched: list[str], since: float) -> float:
    """Wait until every batch of the run is cancelling or cancelled; check one cancel each, the others alone."""
    batch_ids: list[str] = stack.xcom(dag_id, run_id, "create_tagged")
    assert len(batch_ids) == 3

    def all_cancelled() -> bool:
        return all(stack.batch(batch_id)["status"] in ("cancelling", "cancelled") for batch_id in batch_ids)

    wait_until(all_cancelled, CLEANUP_BOUND_SEC, f"the batches of {run_id} to be cancelled")
    took = time.time() - since
    time.sleep(3)  # a second cleanup racing the first would show within seconds
    for batch_id in batch_ids:
        assert len([e for e in stack.batch_cancels(batch_id) if e["status"]]) == 1, batch_id
    for batch_id in untouched:
        assert stack.batch_cancels(batch_id) == [], batch_id
        assert stack.batch(batch_id)["status"] == "in_progress", batch_id
    return took


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
