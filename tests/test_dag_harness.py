"""The DAG-running harness leaves the process's logging as it found it."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

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
