"""No batch outlives the DAG run that launched it: run tags, a teardown over the whole set, a safety net.

How the DAG works:

1. ``submit_batches`` submits a few batches with :meth:`PSOpenAIHook.create_batch
   <airflow_psopenai.hooks.PSOpenAIHook.create_batch>`. Called in a task, it tags each batch's
   metadata with the run (``airflow_dag_id``, ``airflow_run_id``, ``airflow_task_id``). Batches
   created with the ``openai`` SDK or the official ``OpenAITriggerBatchOperator`` get the same tags
   with ``metadata=run_tags(context)`` (:func:`airflow_psopenai.run_tags.run_tags`).
2. ``process_results`` stands for the work that needs them; it fails on purpose while the param
   ``fail_processing`` is true (the default).
3. ``cancel_run_batches`` (:class:`StopBatchesOperator`, a teardown of ``submit_batches``) runs
   whatever happened upstream: it lists the account's batches, newest first, down to when the run
   was created, cancels every one tagged with this run that still runs (one task, not one per
   batch), waits for all of them in one trigger, and passes them on. ``if_not_cancellable="succeed"``:
   a batch that already ended is nothing to cancel.
4. The DAG's ``on_failure_callback=cancel_run_batches`` is the safety net for what no task handles:
   a run failed by ``dagrun_timeout``, or a task that failed on its last try before the teardown
   could run. It cancels the same set (without a wait), never raises, and is idempotent.

The run ends **failed** (``process_results`` failed), with every batch it launched cancelled. With
``fail_processing=false`` the teardown still runs: the batches are cancelled when the run is over,
whatever its outcome (drop the teardown if finished batches are what you want to keep).

Run it against the real API: upload a JSONL input file with ``purpose="batch"`` and trigger the DAG
with ``{"input_file_id": "file-..."}``. The default ``input_file_id`` is only accepted by the emulator.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.callbacks import cancel_run_batches
from airflow_psopenai.operators import StopBatchesOperator

log = logging.getLogger(__name__)

# The emulator accepts any file ID; the real API needs the ID of a file uploaded with purpose="batch".
DEFAULT_INPUT_FILE_ID = "file-psopenai-example-input"


@task
def submit_batches(params: dict[str, Any]) -> list[str]:
    """Submit ``params["batches"]`` batches; each carries the run tags in its metadata."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        ids = [
            str(hook.create_batch(input_file_id=params["input_file_id"], metadata={"pipeline": "example"})["id"])
            for _ in range(params["batches"])
        ]
    finally:
        hook.close()
    log.info("Submitted %d batches: %s", len(ids), ids)
    return ids


@task(retries=0)
def process_results(batch_ids: list[str], params: dict[str, Any]) -> None:
    """Stand for the work that needs the batches; fail while ``fail_processing`` is true."""
    if params["fail_processing"]:
        raise RuntimeError(f"process_results failed on purpose; the {len(batch_ids)} batches are no longer wanted.")


with DAG(
    "example_psopenai_run_cleanup",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai"],
    on_failure_callback=cancel_run_batches,
    dagrun_timeout=timedelta(hours=6),
    params={
        "input_file_id": Param(DEFAULT_INPUT_FILE_ID, type="string", description="ID of an uploaded JSONL file."),
        "batches": Param(3, type="integer", minimum=1, maximum=50, description="How many batches to submit."),
        "fail_processing": Param(True, type="boolean", description="Make process_results fail."),
    },
):
    submitted = submit_batches()
    processed = process_results(submitted)
    cleanup = StopBatchesOperator(
        task_id="cancel_run_batches",
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
    processed >> cleanup
