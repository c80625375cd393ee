"""When a run is late, stop paying for its batches: a deadline's callback cancels them, a teardown cleans up.

A batch can take up to its completion window (24 hours) and bills for every request it runs. When
the DAG run that needs the results is hours late, they are no longer wanted: Airflow's Deadline
Alerts (Airflow 3.1+) call a callback once the run passes its deadline, while it still runs.

How the DAG works:

``submit_batches`` (the setup)
    Submits ``batches`` batches with :meth:`PSOpenAIHook.create_batch
    <airflow_psopenai.hooks.PSOpenAIHook.create_batch>`. Called in a task, it tags each batch with
    the run (``airflow_dag_id``, ``airflow_run_id``, ``airflow_task_id``), and a retry of the task
    takes over the batches its earlier try created instead of paying for new ones.
``wait_for_results`` (the work)
    Waits until every batch has ended, at most ``max_wait_seconds``, and fails unless all of them
    completed. (On the emulator, batches complete only on a schedule the test sets: without one it fails
    once the wait is over.)
``cancel_leftover_batches`` (the teardown)
    A :class:`StopBatchesOperator` over every batch tagged with this run, whatever happened
    upstream; ``if_not_cancellable="succeed"``: a batch that already ended, or that the deadline's
    callback already cancelled, is nothing to cancel.
The deadline (``deadline=DeadlineAlert(...)``)
    Two hours after the run was queued, if it is still running, Airflow's triggerer awaits
    ``acancel_run_batches`` (``AsyncCallback``): it lists the account's batches, newest first, down
    to the run's ``run_after``, and cancels every one tagged with this run that still runs, without
    waiting (one list page per 100 batches created since the run, one GET and one cancel per running
    batch). It never raises and is bounded by ``timeout_sec``. On Airflow 3.2+
    ``SyncCallback(cancel_run_batches, kwargs=...)`` does the same in the executor instead.
    Airflow 3.0 has no Deadline Alerts: there the DAG runs without a deadline.

The run ends **failed** when the results did not all complete (the default on the emulator, and a
run whose batches its deadline cancelled), with no batch left running.

Run it against the real API: upload a JSONL input file with ``purpose="batch"`` and trigger the DAG
with ``{"input_file_id": "file-...", "max_wait_seconds": 86400}``. The default ``input_file_id`` is
only accepted by the emulator.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.callbacks import acancel_run_batches
from airflow_psopenai.compat import DEADLINE_ALERTS
from airflow_psopenai.operators import StopBatchesOperator

log = logging.getLogger(__name__)

# The emulator accepts any file ID; the real API needs the ID of a file uploaded with purpose="batch".
DEFAULT_INPUT_FILE_ID = "file-psopenai-example-input"
# How long after the run was queued it counts as late.
LATE_AFTER = timedelta(hours=2)
ENDED = ("completed", "failed", "expired", "cancelled")


def late_run_deadline() -> dict[str, Any]:
    """Return the DAG's ``deadline`` argument: cancel the run's batches once it is late (Airflow 3.1+)."""
    if not DEADLINE_ALERTS:  # Airflow 3.0 has no Deadline Alerts
        return {}
    # Airflow 3.2 exports these from airflow.sdk, 3.1 from airflow.sdk.definitions.deadline.
    from airflow_psopenai.compat import AsyncCallback, DeadlineAlert, DeadlineReference

    callback = AsyncCallback(acancel_run_batches, kwargs={"conn_id": "psopenai_default", "timeout_sec": 120})
    return {
        "deadline": DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=LATE_AFTER, callback=callback)
    }


@task
def submit_batches(params: dict[str, Any]) -> list[str]:
    """Submit ``params["batches"]`` batches; each carries the run tags in its metadata."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        ids = [
            str(hook.create_batch(input_file_id=params["input_file_id"], metadata={"part": str(part)})["id"])
            for part in range(params["batches"])
        ]
    finally:
        hook.close()
    log.info("Submitted %d batches: %s", len(ids), ids)
    return ids


@task(retries=0)
def wait_for_results(batch_ids: list[str], params: dict[str, Any]) -> dict[str, str]:
    """Wait until every batch has ended (at most ``max_wait_seconds``); fail unless all completed."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    until = time.monotonic() + params["max_wait_seconds"]
    try:
        while True:
            statuses = {batch_id: str(hook.get_batch(batch_id)["status"]) for batch_id in batch_ids}
            if all(status in ENDED for status in statuses.values()) or time.monotonic() >= until:
                break
            time.sleep(params["poll_seconds"])
    finally:
        hook.close()
    if any(status != "completed" for status in statuses.values()):
        raise RuntimeError(f"Not every batch completed: {statuses}")
    return statuses


with DAG(
    "example_psopenai_deadline",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai"],
    params={
        "input_file_id": Param(DEFAULT_INPUT_FILE_ID, type="string", description="ID of an uploaded JSONL file."),
        "batches": Param(2, type="integer", minimum=1, maximum=50, description="How many batches to submit."),
        "max_wait_seconds": Param(30, type="number", minimum=0, description="Longest wait for the results."),
        "poll_seconds": Param(5, type="number", exclusiveMinimum=0, description="Time between two looks."),
    },
    **late_run_deadline(),
):
    submitted = submit_batches()
    waited = wait_for_results(submitted)
    cleanup = StopBatchesOperator(
        task_id="cancel_leftover_batches",
        # Every batch this deployment tagged with this run, whichever task created it.
        this_run=True,
        if_not_cancellable="succeed",
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=2.0,
        wait_timeout=timedelta(minutes=15),
        max_retry_count=3,
        retries=2,
        retry_delay=timedelta(seconds=10),
    ).as_teardown(setups=submitted)
    waited >> cleanup
