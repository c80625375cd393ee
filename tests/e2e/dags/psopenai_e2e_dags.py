"""DAGs the end-to-end tests run on a real scheduler, DAG processor, triggerer and API server.

Batch IDs come from the run's conf, so a test creates its batches on the emulator first and knows
exactly which requests belong to which task.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_psopenai.callbacks import cancel_run_batches
from airflow_psopenai.operators import StopBatchOperator, StopOrphanedBatchesOperator
from airflow_psopenai.sensors import BatchCancelledSensor

START = datetime(2026, 1, 1)
# The deferred, restart and mark-failed tests count each batch's polls (its GETs): their waits poll one by
# one. On the default connection the status board answers waits that come due together from one list page,
# which a loaded machine makes likely, and their batches then see no GET of their own.
PER_BATCH = "psopenai_per_batch"


def conf_id(key: str) -> str:
    """Return the template of one batch ID taken from the run's conf."""
    return "{{ dag_run.conf['" + key + "'] }}"


# The happy path: a deferred wait after a cancel, and a deferred sensor on a batch another task cancels.
with DAG("e2e_psopenai_deferred", schedule=None, start_date=START, catchup=False, tags=["psopenai-e2e"]):
    StopBatchOperator(
        task_id="stop_and_wait",
        conn_id=PER_BATCH,
        batch_id=conf_id("stop_batch_id"),
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=1.0,
        wait_timeout=180,
        retries=0,
    )
    stop_only = StopBatchOperator(
        task_id="stop_only", batch_id=conf_id("sensed_batch_id"), conn_id=PER_BATCH, retries=0
    )
    sensor = BatchCancelledSensor(
        task_id="sensor",
        conn_id=PER_BATCH,
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
        conn_id=PER_BATCH,
        batch_id=conf_id("long_batch_id"),
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=1.0,
        wait_timeout=150,
        retries=0,
    )
    StopBatchOperator(
        task_id="wait_short",
        conn_id=PER_BATCH,
        batch_id=conf_id("short_batch_id"),
        wait=True,
        deferrable=True,
        poll_interval=1.0,
        wait_timeout=60,
        retries=0,
    )
    cancel_sensed = StopBatchOperator(
        task_id="cancel_sensed", batch_id=conf_id("sensed_batch_id"), conn_id=PER_BATCH, retries=0
    )
    sensor_long = BatchCancelledSensor(
        task_id="sensor_long",
        conn_id=PER_BATCH,
        batch_id=conf_id("sensed_batch_id"),
        deferrable=True,
        poke_interval=1,
        timeout=150,
        retries=0,
    )
    cancel_sensed >> sensor_long

# A user marks the deferred task failed while it waits.
with DAG("e2e_psopenai_mark_failed", schedule=None, start_date=START, catchup=False, tags=["psopenai-e2e"]):
    StopBatchOperator(
        task_id="stop_and_wait",
        conn_id=PER_BATCH,
        batch_id=conf_id("batch_id"),
        wait=True,
        deferrable=True,
        poll_interval=1.0,
        wait_timeout=600,
        retries=0,
    )


# -- no batch outlives its run: three ways a run fails with tagged batches still running ----------------------


@task
def create_tagged(**context: Any) -> list[str]:
    """Create three batches with the hook in the task: each carries the run tags."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        return [str(hook.create_batch("file-e2e")["id"]) for _ in range(3)]
    finally:
        hook.close()


@task(retries=1, retry_delay=timedelta(seconds=1))
def fail_every_try() -> None:
    """Fail on every try, the last one included: no task of the run handles the failure."""
    raise RuntimeError("fails on every try")


@task(retries=0)
def work_for_long() -> None:
    """Hold the run open until the timeout passes or a user marks the run failed."""
    time.sleep(600)


# (a) A task fails on its last try: the DAG's failure callback (in the DAG processor) cancels.
with DAG(
    "e2e_psopenai_cleanup_last_try",
    schedule=None,
    start_date=START,
    catchup=False,
    on_failure_callback=cancel_run_batches,
    tags=["psopenai-e2e"],
):
    create_tagged() >> fail_every_try()

# (b) dagrun_timeout passes while the batches run: the same callback.
with DAG(
    "e2e_psopenai_cleanup_timeout",
    schedule=None,
    start_date=START,
    catchup=False,
    dagrun_timeout=timedelta(seconds=20),
    on_failure_callback=cancel_run_batches,
    tags=["psopenai-e2e"],
):
    create_tagged() >> work_for_long()

# (c) A user marks the run failed through the REST API: no callback runs; the provider's listener cancels.
with DAG("e2e_psopenai_cleanup_marked", schedule=None, start_date=START, catchup=False, tags=["psopenai-e2e"]):
    create_tagged() >> work_for_long()

# (d) The sweep of a maintenance DAG: what a failed run left that no callback or listener saw.
with DAG("e2e_psopenai_sweep", schedule=None, start_date=START, catchup=False, tags=["psopenai-e2e"]):
    StopOrphanedBatchesOperator(task_id="sweep")
