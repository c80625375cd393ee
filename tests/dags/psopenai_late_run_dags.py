"""DAGs the late-run callback and the retry-safe create_batch tests run with dag.test(); inputs from the run's conf."""

from __future__ import annotations

import multiprocessing
import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, get_current_context, task

START = datetime(2026, 1, 1)


def create(reuse: bool = True) -> str:
    """Create a batch of the run's conf input file with the hook; return its ID."""
    from airflow_psopenai.hooks import PSOpenAIHook

    conf = get_current_context()["dag_run"].conf
    hook = PSOpenAIHook()
    try:
        return str(hook.create_batch(conf["input_file_id"], reuse_earlier_batch=reuse)["id"])
    finally:
        hook.close()


# A run whose batches still run when it is over: what a deadline's callback finds when the run is late.
with DAG("late_run_batches", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):

    @task
    def create_tagged() -> list[str]:
        """Create three batches (one per input file) in the task: each carries the run tags."""
        from airflow_psopenai.hooks import PSOpenAIHook

        hook = PSOpenAIHook()
        try:
            return [str(hook.create_batch(f"file-late-{n}")["id"]) for n in range(3)]
        finally:
            hook.close()

    create_tagged()


def created_then_failed(reuse: bool) -> str:
    """Create a batch, then fail on the first try: the retry creates it again."""
    batch_id = create(reuse)
    if get_current_context()["ti"].try_number == 1:
        raise RuntimeError(f"try 1 fails after creating batch {batch_id}")
    return batch_id


for dag_id, reuse in (("create_batch_retried", True), ("create_batch_retried_no_reuse", False)):
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
        task(task_id="create", retries=1, retry_delay=timedelta(0))(created_then_failed)(reuse)


@task(retries=1, retry_delay=timedelta(0))
def create_three_then_fail() -> list[str]:
    """Create three batches of one input file, then fail on the first try."""
    ids = [create() for _ in range(3)]
    if get_current_context()["ti"].try_number == 1:
        raise RuntimeError(f"try 1 fails after creating batches {ids}")
    return ids


with DAG("create_batches_retried", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
    create_three_then_fail()


def first_run_of_the_try() -> None:
    """The try's first run, in a process of its own that ends once its batch is created."""
    code = 1
    try:
        create()
        code = 0
    finally:
        os._exit(code)


@task(retries=0)
def create_in_a_try_run_twice() -> dict[str, Any]:
    """Run the same try twice, as Airflow can (apache/airflow#67287): first in another process, then here."""
    first = multiprocessing.get_context("fork").Process(target=first_run_of_the_try)
    first.start()
    first.join(60)
    return {"first_run_exit_code": first.exitcode, "batch_id": create()}


with DAG("create_batch_same_try_twice", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
    create_in_a_try_run_twice()


def deadline_of_two_hours() -> dict[str, Any]:
    """Return a ``deadline`` argument calling acancel_run_batches two hours after the run was queued (3.1+)."""
    from airflow_psopenai.compat import DEADLINE_ALERTS

    if not DEADLINE_ALERTS:
        return {}
    from airflow_psopenai.callbacks import acancel_run_batches
    from airflow_psopenai.compat import AsyncCallback, DeadlineAlert, DeadlineReference

    callback = AsyncCallback(acancel_run_batches, kwargs={"timeout_sec": 30})
    alert = DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(hours=2), callback=callback)
    return {"deadline": alert}


# A run with a Deadline Alert that ends in time: it succeeds, and its deadline is no longer needed.
with DAG(
    "deadline_run_in_time",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["psopenai-test"],
    **deadline_of_two_hours(),
):

    @task
    def quick() -> str:
        return "done"

    quick()


def sync_deadline_of_two_hours() -> dict[str, Any]:
    """Return a ``deadline`` argument calling cancel_run_batches in the executor (``SyncCallback``, 3.2+)."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS

    if not AIRFLOW_V_3_2_PLUS:
        return {}
    from airflow_psopenai.callbacks import cancel_run_batches
    from airflow_psopenai.compat import DeadlineAlert, DeadlineReference, SyncCallback

    callback = SyncCallback(cancel_run_batches, kwargs={"timeout_sec": 30})
    alert = DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=timedelta(hours=2), callback=callback)
    return {"deadline": alert}


# A run that waits for its batches, at most the conf's max_wait_seconds: its deadline's SyncCallback cancels them.
with DAG(
    "late_run_sync_deadline",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["psopenai-test"],
    **sync_deadline_of_two_hours(),
):

    @task
    def create_two() -> list[str]:
        from airflow_psopenai.hooks import PSOpenAIHook

        hook = PSOpenAIHook()
        try:
            return [str(hook.create_batch(f"file-sync-{n}")["id"]) for n in range(2)]
        finally:
            hook.close()

    @task
    def wait_until_ended(batch_ids: list[str]) -> dict[str, str]:
        """Poll the batches until each has ended or max_wait_seconds passed; return their statuses."""
        import time

        from airflow_psopenai.hooks import PSOpenAIHook

        until = time.monotonic() + get_current_context()["dag_run"].conf["max_wait_seconds"]
        hook = PSOpenAIHook()
        try:
            while True:
                statuses = {batch_id: str(hook.get_batch(batch_id)["status"]) for batch_id in batch_ids}
                if "in_progress" not in statuses.values() or time.monotonic() >= until:
                    return statuses
                time.sleep(0.2)
        finally:
            hook.close()

    wait_until_ended(create_two())
