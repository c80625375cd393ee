"""Make sure no batch outlives its DAG run: cancel it in a teardown task.

A teardown task runs after the work whatever happened to it (success, failure, upstream failure),
like a ``finally`` block. Here it is a :class:`StopBatchOperator` with
``if_not_cancellable="succeed"``: it cancels a batch that is still running, and **succeeds when
there is nothing left to cancel** (the batch already ended, or is already ``cancelling``: then,
with ``wait=True``, it waits until the batch is ``cancelled``). With the default
``if_not_cancellable="fail"`` a cleanup would fail whenever the work had already stopped the batch;
``"skip"`` would mark it skipped instead.

The tasks:

``submit_batch`` (the setup)
    Submits a batch and returns it.
``sample_batch`` (the work)
    Lets the batch run for ``sample_seconds``, reads how far it got, and stops it itself: it only
    needs a sample of the results. With the param ``fail_work`` (default false) it fails before
    stopping the batch, as a crash would.
``cleanup_batch`` (the teardown)
    ``.as_teardown(setups=batch)``. When ``sample_batch`` stopped the batch, there is nothing left
    to cancel and the teardown succeeds without sending a cancel. When ``sample_batch`` failed, the
    teardown sends the cancel. Either way, no batch keeps running (and billing) after the run.

A failed teardown does not fail the DAG run by default (``on_failure_fail_dagrun=False``); the run's
state comes from the work: success by default, failed with ``fail_work=true``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.operators import StopBatchOperator

log = logging.getLogger(__name__)

DEFAULT_INPUT_FILE_ID = "file-psopenai-example-input"


@task(multiple_outputs=False)
def submit_batch(params: dict[str, Any]) -> dict[str, Any]:
    """Submit a batch and return it."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        batch = hook.create_batch(input_file_id=params["input_file_id"])
    finally:
        hook.close()
    log.info("Submitted batch %s.", batch["id"])
    return batch


@task(retries=0)
def sample_batch(batch: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Let the batch run for a while, then stop it: a sample of its results is enough."""
    from airflow_psopenai.hooks import PSOpenAIHook

    time.sleep(params["sample_seconds"])
    if params["fail_work"]:
        raise RuntimeError(f"sample_batch failed on purpose (fail_work=true); batch {batch['id']} is still running.")
    hook = PSOpenAIHook()
    try:
        stopped = hook.cancel_batch(batch["id"])
    finally:
        hook.close()
    log.info("Enough: stopped batch %s (%s).", stopped["id"], stopped["status"])
    return {"batch_id": stopped["id"], "request_counts": stopped["request_counts"]}


with DAG(
    "example_psopenai_teardown",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai"],
    params={
        "input_file_id": Param(
            DEFAULT_INPUT_FILE_ID,
            type="string",
            description="ID of an uploaded JSONL file (purpose=batch). The default works only with the emulator.",
        ),
        "sample_seconds": Param(
            1, type="number", minimum=0, description="How long the batch runs before it is stopped."
        ),
        "fail_work": Param(False, type="boolean", description="Make sample_batch fail before it stops the batch."),
    },
):
    batch = submit_batch()
    work = sample_batch(batch)
    cleanup = StopBatchOperator(
        task_id="cleanup_batch",
        batch=batch,
        if_not_cancellable="succeed",  # nothing left to cancel is fine for a cleanup
        wait=True,  # until cancelled (or otherwise settled)
        pass_through=True,
        poll_interval=2.0,
        max_retry_count=3,
    ).as_teardown(setups=batch)
    work >> cleanup
