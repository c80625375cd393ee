"""DAGs the end-to-end tests run on a real scheduler, DAG processor, triggerer and API server.

Batch IDs come from the run's conf, so a test creates its batches on the emulator first and knows
exactly which requests belong to which task.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from airflow_psopenai.operators import StopBatchOperator
from airflow_psopenai.sensors import BatchCancelledSensor

START = datetime(2026, 1, 1)


def conf_id(key: str) -> str:
    """Return the template of one batch ID taken from the run's conf."""
    return "{{ dag_run.conf['" + key + "'] }}"


# The happy path: a deferred wait after a cancel, and a deferred sensor on a batch another task cancels.
with DAG("e2e_psopenai_deferred", schedule=None, start_date=START, catchup=False, tags=["psopenai-e2e"]):
    StopBatchOperator(
        task_id="stop_and_wait",
        batch_id=conf_id("stop_batch_id"),
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=1.0,
        wait_timeout=180,
        retries=0,
    )
    stop_only = StopBatchOperator(task_id="stop_only", batch_id=conf_id("sensed_batch_id"), retries=0)
    sensor = BatchCancelledSensor(
        task_id="sensor",
        batch_id=conf_id("sensed_batch_id"),
        deferrable=True,
        poke_interval=1,
        timeout=180,
        retries=0,
    )
    stop_only >> sensor

# Triggerer restart: two waits and a sensor in the triggerer while it is stopped and started again.
# wait_short's deadline passes while the triggerer is down (or just after it is back).
with DAG("e2e_psopenai_restart", schedule=None, start_date=START, catchup=False, tags=["psopenai-e2e"]):
    StopBatchOperator(
        task_id="wait_long",
        batch_id=conf_id("long_batch_id"),
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=1.0,
        wait_timeout=120,
        retries=0,
    )
    StopBatchOperator(
        task_id="wait_short",
        batch_id=conf_id("short_batch_id"),
        wait=True,
        deferrable=True,
        poll_interval=1.0,
        wait_timeout=30,
        retries=0,
    )
    cancel_sensed = StopBatchOperator(task_id="cancel_sensed", batch_id=conf_id("sensed_batch_id"), retries=0)
    sensor_long = BatchCancelledSensor(
        task_id="sensor_long",
        batch_id=conf_id("sensed_batch_id"),
        deferrable=True,
        poke_interval=1,
        timeout=120,
        retries=0,
    )
    cancel_sensed >> sensor_long

# A user marks the deferred task failed while it waits.
with DAG("e2e_psopenai_mark_failed", schedule=None, start_date=START, catchup=False, tags=["psopenai-e2e"]):
    StopBatchOperator(
        task_id="stop_and_wait",
        batch_id=conf_id("batch_id"),
        wait=True,
        deferrable=True,
        poll_interval=1.0,
        wait_timeout=600,
        retries=0,
    )
