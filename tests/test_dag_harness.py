"""The DAG-running harness: it leaves the process's logging as it found it, and runs DAGs with Deadline Alerts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from airflow_psopenai.testing.dag_tests import DagRunResult


def test_a_run_leaves_no_task_log_handler_behind(
    emulator: OpenAIEmulator, run_dag: Callable[..., DagRunResult]
) -> None:
    """Airflow 3.0's dag.test() adds one on the sys.stdout of the moment, which pytest closes after the test."""
    task_logger = logging.getLogger("airflow.task")
    before = list(task_logger.handlers)
    result = run_dag("create_batch_retried", input_file_id="file-harness")
    assert result.task_states["create"] == "success"
    assert task_logger.handlers == before


def test_a_dag_with_a_deadline_alert_that_ends_in_time_succeeds(
    emulator: OpenAIEmulator, run_dag: Callable[..., DagRunResult]
) -> None:
    """dag.test() runs the DAG's deadline-alert bookkeeping when the run succeeds (3.2 and 3.3 looked the
    alerts up by their definitions instead of their IDs and crashed)."""
    from airflow_psopenai.compat import DEADLINE_ALERTS, MISSING_DEADLINE_ALERTS
    from airflow_psopenai.testing.dag_tests import deadline_run_unsupported

    if not DEADLINE_ALERTS:
        pytest.skip(f"{MISSING_DEADLINE_ALERTS}; this is 3.0")
    if reason := deadline_run_unsupported():
        pytest.skip(reason)
    result = run_dag("deadline_run_in_time")
    assert result.state == "success", result.task_states
    assert result.xcom("quick") == "done"
