"""DAGs of the cluster tests (tests/e2e/cluster/): many waits at once, and waits whose process is killed.

Batch IDs come from the run's conf, so a test creates its batches on the emulator first and knows
exactly which requests belong to which task.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_psopenai.operators import StopBatchOperator
from airflow_psopenai.sensors import BatchCancelledSensor

START = datetime(2026, 1, 1)


@task
def conf_ids(key: str, **context: Any) -> list[str]:
    """Return a list of batch IDs from the run's conf, to map a wait over."""
    return [str(batch_id) for batch_id in context["dag_run"].conf[key]]


# Load: a mapped deferrable cancel-and-wait per batch, and mapped deferrable sensors on some of them.
with DAG("cluster_psopenai_load", schedule=None, start_date=START, catchup=False, max_active_tasks=200):
    StopBatchOperator.partial(
        task_id="stop_and_wait",
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=2.0,
        wait_timeout=900,
        retries=0,
    ).expand(batch_id=conf_ids.override(task_id="stop_ids")("stop_batch_ids"))
    BatchCancelledSensor.partial(task_id="sensor", deferrable=True, poke_interval=2, timeout=900, retries=0).expand(
        batch_id=conf_ids.override(task_id="sensed_ids")("sensed_batch_ids")
    )

# A triggerer killed under deferred waits: long ones, and a short one whose deadline passes after the kill.
with DAG("cluster_psopenai_failover", schedule=None, start_date=START, catchup=False):
    StopBatchOperator.partial(
        task_id="wait_long",
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=1.0,
        wait_timeout=300,
        retries=0,
    ).expand(batch_id=conf_ids.override(task_id="long_ids")("long_batch_ids"))
    StopBatchOperator(
        task_id="wait_short",
        batch_id="{{ dag_run.conf['short_batch_id'] }}",
        wait=True,
        deferrable=True,
        poll_interval=1.0,
        wait_timeout=75,
        retries=0,
    )

# The Celery worker killed while a wait runs in it (not deferred): the retry runs on a new worker.
with DAG("cluster_psopenai_worker_kill", schedule=None, start_date=START, catchup=False):
    StopBatchOperator(
        task_id="stop_and_wait",
        batch_id="{{ dag_run.conf['batch_id'] }}",
        wait=True,
        deferrable=False,
        pass_through=True,
        poll_interval=1.0,
        wait_timeout=300,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
