"""Cancel an OpenAI Batch when a task that depends on it fails, and keep its partial results.

The flagship example (``make demo`` runs it against the bundled emulator).

Why: a Batch bills for every request it completes. When a step of the pipeline fails after the
batch was submitted, its results will never be used: stop paying for it at once.

How the DAG works:

1. ``submit_batch`` submits a batch from an uploaded JSONL file (param ``input_file_id``) with
   :meth:`PSOpenAIHook.create_batch <airflow_psopenai.hooks.PSOpenAIHook.create_batch>` and
   returns the batch object (it goes to XCom).
2. ``process_records`` stands for the work that needs the batch's results. It fails on purpose
   while the param ``fail_processing`` is true (the default), as a broken upstream step or a failed
   data-quality check would; ``retries=0`` makes it fail at once, so the example is deterministic.
3. ``cancel_batch`` (:class:`StopBatchOperator`, ``trigger_rule="one_failed"``) runs only because
   a task upstream of it failed. It sends the cancel, then waits until the batch is settled
   (``wait=True``) in the triggerer (``deferrable=True``, no worker slot held), and passes the
   settled batch on (``pass_through=True``). It may retry: a retry that finds the batch
   ``cancelling`` or ``cancelled`` takes it as its own earlier cancel, sends no second one, and
   waits for it or passes it on. (Airflow 3.3 can fail a deferred task whose trigger fires within
   seconds, apache/airflow#67287: the retry rides that out too.)
4. ``confirm_cancelled`` (:class:`BatchCancelledSensor`) checks the batch really ended
   ``cancelled``: a cancel can lose the race against a batch that was about to finish, and then the
   operator's wait ends on ``completed`` instead. The sensor fails in that case (set ``soft_fail``
   to skip instead) and otherwise pushes the cancelled batch to XCom.
5. ``report_partial_results`` logs ``request_counts`` (how far the batch got) and
   ``output_file_id`` (the file holding the results of the requests that completed before the
   cancel; download it with the Files API, ``GET /files/{output_file_id}/content``).

6. ``fail_run`` (``trigger_rule="one_failed"``, downstream of every other task) fails the DAG run.
   Airflow sets a run's state from its *leaf* tasks: without this "watcher" task the run would be
   marked successful, because the cancel, the sensor and the report succeeded.

The DAG run therefore ends **failed**, and that is expected: ``process_records`` failed. The point is
what happens next: the batch is cancelled, confirmed, and its partial results are known. With
``fail_processing=false`` the run succeeds; the cancel, the sensor, the report and ``fail_run`` are
skipped, and the batch is left to finish.

Run it against the real API: put your key in the ``psopenai_default`` connection (or set
``OPENAI_API_KEY``), upload a JSONL input file with ``purpose="batch"``, and trigger the DAG with
``{"input_file_id": "file-..."}``. The default ``input_file_id`` is only accepted by the emulator.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.operators import StopBatchOperator
from airflow_psopenai.sensors import BatchCancelledSensor

log = logging.getLogger(__name__)

# The emulator accepts any file ID; the real API needs the ID of a file uploaded with purpose="batch".
DEFAULT_INPUT_FILE_ID = "file-psopenai-example-input"


@task(multiple_outputs=False)
def submit_batch(params: dict[str, Any]) -> dict[str, Any]:
    """Submit a batch and return it (the batch object goes to XCom)."""
    # Imported in the task, not at the top: the DAG processor then parses this file without httpx.
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()  # connection "psopenai_default"; the key never appears in the DAG
    try:
        batch = hook.create_batch(
            input_file_id=params["input_file_id"],
            endpoint="/v1/chat/completions",
            completion_window="24h",
            # In a task, the hook tags the batch's metadata with the run (airflow_dag_id, airflow_run_id,
            # airflow_task_id): it shows on the batch's page, and StopBatchesOperator(metadata=...) finds it.
        )
    finally:
        hook.close()
    log.info("Submitted batch %s (status %s).", batch["id"], batch["status"])
    return batch


@task(retries=0)
def process_records(batch: dict[str, Any], params: dict[str, Any]) -> None:
    """Stand for the work that needs the batch; fail while ``fail_processing`` is true."""
    if params["fail_processing"]:
        raise RuntimeError(
            f"process_records failed on purpose (fail_processing=true), as a broken upstream step would. "
            f"Batch {batch['id']} is no longer wanted: cancel_batch stops it."
        )
    log.info("Processing went fine; batch %s is left to finish.", batch["id"])


@task(multiple_outputs=False)
def report_partial_results(batch: dict[str, Any]) -> dict[str, Any]:
    """Log how far the cancelled batch got and where its partial results are."""
    counts = batch.get("request_counts") or {}
    output_file_id = batch.get("output_file_id")
    log.info(
        "Batch %s is %s: %s of %s requests completed, %s failed.",
        batch["id"],
        batch["status"],
        counts.get("completed"),
        counts.get("total"),
        counts.get("failed"),
    )
    if output_file_id:
        log.info("Partial results: file %s (GET /files/%s/content).", output_file_id, output_file_id)
    else:
        log.info("No partial results: no request completed before the cancel.")
    return {
        "batch_id": batch["id"],
        "status": batch["status"],
        "request_counts": counts,
        "output_file_id": output_file_id,
    }


@task(trigger_rule="one_failed", retries=0)
def fail_run() -> None:
    """Fail the DAG run when any task failed (the run's state otherwise comes from its leaf tasks only)."""
    raise RuntimeError("A task of this run failed (see process_records); the batch was cancelled.")


with DAG(
    "example_psopenai_cancel_on_failure",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai"],
    params={
        "input_file_id": Param(
            DEFAULT_INPUT_FILE_ID,
            type="string",
            description="ID of an uploaded JSONL file (purpose=batch). The default works only with the emulator.",
        ),
        "fail_processing": Param(
            True,
            type="boolean",
            description="Make process_records fail, so that the batch is cancelled (the point of the example).",
        ),
    },
):
    batch = submit_batch()
    processed = process_records(batch)

    cancel_batch = StopBatchOperator(
        task_id="cancel_batch",
        batch=batch,  # the whole object from XCom; batch_id="..." works too
        trigger_rule="one_failed",  # only when something upstream failed
        wait=True,  # until cancelled (or completed, failed, expired if the cancel lost the race)
        deferrable=True,  # wait in the triggerer, not in a worker slot
        pass_through=True,  # the settled batch goes to XCom
        poll_interval=2.0,  # seconds; a real batch can stay "cancelling" for up to 10 minutes
        wait_timeout=timedelta(minutes=15),
        max_retry_count=3,  # ride out rate limits (429) and 5xx on the cancel itself
        # A retry takes the batch it finds cancelling or cancelled as its own cancel and waits for it
        # (Airflow 3.3 can fail a deferred task whose trigger fires at once).
        retries=2,
        retry_delay=timedelta(seconds=10),
    )
    processed >> cancel_batch

    confirm_cancelled = BatchCancelledSensor(
        task_id="confirm_cancelled",
        batch=cancel_batch.output,  # the object cancel_batch passed on
        deferrable=True,
        poke_interval=5,
        timeout=15 * 60,
        retries=2,  # a poke is safe to repeat
        retry_delay=timedelta(seconds=10),
    )

    report = report_partial_results(confirm_cancelled.output)

    [batch, processed, cancel_batch, confirm_cancelled, report] >> fail_run()
