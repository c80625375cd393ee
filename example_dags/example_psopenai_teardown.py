"""Make sure no batch outlives its DAG run: a teardown task, and a cancel as soon as the work fails.

A teardown task runs after the work whatever happened to it (success, failure, upstream failure),
like a ``finally`` block. Here it is a :class:`StopBatchOperator` with
``if_not_cancellable="succeed"``: it cancels a batch that is still running, and **succeeds when
there is nothing left to cancel** (the batch already ended, or is already ``cancelling``: then,
with ``wait=True``, it waits until the batch is ``cancelled``). With the default
``if_not_cancellable="fail"`` a cleanup would fail whenever the work had already stopped the batch;
``"skip"`` would mark it skipped instead.

Next to it, a cancel-on-failure task stops the batch the moment the work fails, rather than when
the run is over. The two combine under two rules of Airflow's:

* A setup task may only be followed directly by tasks with ``trigger_rule="all_success"`` (else the
  DAG fails to parse: "Setup tasks must be followed with trigger rule ALL_SUCCESS"). The
  cancel-on-failure task has ``trigger_rule="one_failed"``, so it must not depend on the setup: it
  takes the batch's ID with a template (``xcom_pull``), not with the setup's XComArg (which would
  make it a direct downstream of the setup), and it sits downstream of the work only.
* The teardown keeps the trigger rule ``.as_teardown()`` gives it (``all_done_setup_success``: it
  runs once everything upstream is done, if the setup succeeded); give it no ``trigger_rule``. It
  is placed after the cancel-on-failure task, so it runs last and finds the batch already
  cancelling: no second cancel is sent.

And one of Airflow's rules about the run's state: it comes from the leaf tasks, teardowns aside. A
``one_failed`` task that succeeds would make a run whose work failed end in success; ``fail_run``
(``trigger_rule="one_failed"`` after the work) keeps it failed.

The tasks:

``submit_batch`` (the setup)
    Submits a batch and returns it.
``sample_batch`` (the work)
    Lets the batch run for ``sample_seconds``, reads how far it got, and stops it itself: it only
    needs a sample of the results. With the param ``fail_work`` (default false) it fails before
    stopping the batch, as a crash would.
``cancel_on_failure`` (``trigger_rule="one_failed"``)
    Runs only when ``sample_batch`` failed: cancels the batch at once and waits until it is cancelled.
    Skipped otherwise.
``fail_run`` (``trigger_rule="one_failed"``)
    Fails the run when ``sample_batch`` failed. Skipped otherwise.
``cleanup_batch`` (the teardown)
    ``.as_teardown(setups=batch)``. When ``sample_batch`` stopped the batch, or
    ``cancel_on_failure`` did, there is nothing left to cancel and the teardown succeeds without
    sending a cancel. Whatever else happened (``cancel_on_failure`` failed too, the work was
    skipped), it sends the cancel. Either way, no batch keeps running (and billing) after the run.

A failed teardown does not fail the DAG run by default (``on_failure_fail_dagrun=False``); the run
succeeds by default, and fails with ``fail_work=true`` (``fail_run``).
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


@task(trigger_rule="one_failed", retries=0)
def fail_run() -> None:
    """Fail the DAG run when the work failed (the run's state otherwise comes from its leaf tasks only)."""
    raise RuntimeError(
        "sample_batch failed (see its log); the batch was cancelled by cancel_on_failure or the teardown."
    )


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
    cancel_on_failure = StopBatchOperator(
        task_id="cancel_on_failure",
        # A template, not the XComArg `batch`: a direct downstream of a setup task must be all_success.
        batch_id="{{ ti.xcom_pull(task_ids='submit_batch')['id'] }}",
        trigger_rule="one_failed",  # only when the work failed
        wait=True,
        pass_through=True,
        poll_interval=2.0,
        max_retry_count=3,
    )
    cleanup = StopBatchOperator(
        task_id="cleanup_batch",
        batch=batch,
        if_not_cancellable="succeed",  # nothing left to cancel is fine for a cleanup
        wait=True,  # until cancelled (or otherwise settled)
        pass_through=True,
        poll_interval=2.0,
        max_retry_count=3,
    ).as_teardown(setups=batch)  # keeps the teardown's own trigger rule: give it none
    work >> [cancel_on_failure, fail_run()]
    cancel_on_failure >> cleanup
