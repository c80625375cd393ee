"""The sweep on the real stack: a failed run's batch that no callback or listener saw is cancelled once by the
next sweep; a running run's batch, a succeeded run's, another deployment's with the same DAG and run IDs, an
untagged one and one without run tags are left alone. The stack sets no [psopenai] deployment: the worker that
tags the batches and the sweep both derive the deployment from [api] base_url."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.checks import CLEANUP_BOUND_SEC
from tests.e2e.stack import wait_until

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SWEEP = "e2e_psopenai_sweep"


def sweep(stack: AirflowStack) -> tuple[str, dict[str, Any]]:
    run_id = stack.trigger(SWEEP)
    assert stack.wait_run(SWEEP, run_id, timeout=240).state == "success"
    result: dict[str, Any] = stack.xcom(SWEEP, run_id, "sweep")
    return run_id, result


def test_the_next_sweep_cancels_what_a_failed_run_left_once_and_nothing_else(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    deployment = stack.api_url
    # A run that failed; its failure callback ran before the batch below existed (a worker that went on).
    failed_dag = "e2e_psopenai_cleanup_last_try"
    failed_run = stack.trigger(failed_dag)
    assert stack.wait_run(failed_dag, failed_run, timeout=240).state == "failed"
    own: list[str] = stack.xcom(failed_dag, failed_run, "create_tagged")
    wait_until(
        lambda: all(stack.batch(batch_id)["status"] in ("cancelling", "cancelled") for batch_id in own),
        CLEANUP_BOUND_SEC,
        "the failure callback to cancel the run's own batches",
    )
    run = {"airflow_dag_id": failed_dag, "airflow_run_id": failed_run}
    orphan = str(stack.create_batch(metadata={**run, "airflow_deployment": deployment})["id"])
    untouched = [
        str(stack.create_batch(metadata={**run, "airflow_deployment": "another-airflow"})["id"]),
        str(stack.create_batch(metadata=run)["id"]),  # run tags without a deployment tag
        str(stack.create_batch(metadata={"airflow_deployment": deployment})["id"]),  # no run tags
        str(stack.create_batch()["id"]),  # untagged
    ]
    # A running run, whose batches its worker tagged with the deployment it derived.
    running_dag = "e2e_psopenai_cleanup_marked"
    running_run = stack.trigger(running_dag)
    wait_until(
        lambda: stack.task_instances(running_dag, running_run).get("work_for_long", {}).get("state") == "running",
        180,
        "work_for_long to run",
    )
    running_batches: list[str] = stack.xcom(running_dag, running_run, "create_tagged")
    try:
        first_run, first = sweep(stack)
        assert first["cancelled"] == [orphan]
        assert first["failed"] == []
        assert first["kept"]["run running"] == len(running_batches)  # the worker's deployment is the sweep's
        assert first["kept"]["another deployment"] == 1
        assert first["kept"]["no deployment tag"] >= 2
        assert first["kept"]["no run tags"] == 1
        # A succeeded run's batch: the first sweep's own run.
        succeeded = str(
            stack.create_batch(
                metadata={"airflow_deployment": deployment, "airflow_dag_id": SWEEP, "airflow_run_id": first_run}
            )["id"]
        )
        _, second = sweep(stack)
        assert second["cancelled"] == []
        assert second["kept"]["run success"] == 1
        assert len([entry for entry in stack.batch_cancels(orphan) if entry["status"]]) == 1
        for batch_id in [*untouched, *running_batches, succeeded]:
            assert stack.batch_cancels(batch_id) == [], batch_id
            assert stack.batch(batch_id)["status"] == "in_progress", batch_id
    finally:
        stack.patch(f"/api/v2/dags/{running_dag}/dagRuns/{running_run}", {"state": "failed"})
