"""No batch outlives its DAG run, on the real stack: a last try failing, dagrun_timeout, a run marked failed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.checks import (
    CLEANUP_BOUND_SEC,
    assert_cleaned_up,
    bystanders,
    check_cleanup_after_a_last_try_failed,
    check_cleanup_after_the_run_is_marked_failed,
)

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_a_task_failing_on_its_last_try_has_its_runs_batches_cancelled(airflow_stack: AirflowStack) -> None:
    check_cleanup_after_a_last_try_failed(airflow_stack)


def test_dagrun_timeout_has_its_runs_batches_cancelled(airflow_stack: AirflowStack) -> None:
    stack, dag_id = airflow_stack, "e2e_psopenai_cleanup_timeout"
    untouched = bystanders(stack, dag_id)
    run_id = stack.trigger(dag_id)
    result = stack.wait_run(dag_id, run_id, timeout=240)
    assert result.state == "failed"
    assert result.states["create_tagged"] == "success"
    assert assert_cleaned_up(stack, dag_id, run_id, untouched, time.time()) < CLEANUP_BOUND_SEC


def test_a_run_marked_failed_through_the_rest_api_has_its_batches_cancelled(airflow_stack: AirflowStack) -> None:
    check_cleanup_after_the_run_is_marked_failed(airflow_stack)
