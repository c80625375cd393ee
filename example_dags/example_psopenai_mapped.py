"""Cancel every batch a DAG run launched, one mapped task instance per batch.

``submit_batch`` is mapped over the run's input files (param ``input_file_ids``), so the run
launches one batch per file. ``cancel_batches`` is mapped over what those instances returned::

    StopBatchOperator.partial(task_id="cancel_batches", wait=True, ...).expand(batch=batches)

``.partial()`` takes the arguments shared by every instance; ``.expand()`` the one that varies
(``batch=`` a list of batch objects, or ``batch_id=`` a list of IDs). Each instance cancels one
batch, waits for it in the triggerer and passes it on; ``summarize`` receives the list of settled
batches and adds up how far they got.

Worth copying:

- ``if_not_cancellable="succeed"``: a batch that already ended does not fail its instance.
- ``max_active_tis_per_dagrun`` caps how many cancels run at once, and ``max_retry_count`` rides out
  the rate limits (HTTP 429) that a burst of calls can still hit.
- A single task that returns a list of IDs works as well: ``.expand(batch_id=list_ids())``. A list
  given to a plain (unmapped) ``batch_id`` is refused with a message pointing here.

In a real DAG the cancel usually follows the task that decides the work is unwanted
(``trigger_rule="one_failed"``, see ``example_psopenai_cancel_on_failure``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.operators import StopBatchOperator

log = logging.getLogger(__name__)

DEFAULT_INPUT_FILE_IDS = ["file-psopenai-example-1", "file-psopenai-example-2", "file-psopenai-example-3"]


@task
def list_input_files(params: dict[str, Any]) -> list[str]:
    """Return the input files of this run (one batch each)."""
    files: list[str] = params["input_file_ids"]
    return files


@task(multiple_outputs=False)
def submit_batch(input_file_id: str) -> dict[str, Any]:
    """Submit one batch and return it."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        batch = hook.create_batch(input_file_id=input_file_id)
    finally:
        hook.close()
    log.info("Submitted batch %s for %s.", batch["id"], input_file_id)
    return batch


@task(multiple_outputs=False)
def summarize(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up the request counts of the settled batches."""
    statuses = sorted(batch["status"] for batch in batches)
    completed = sum((batch.get("request_counts") or {}).get("completed", 0) for batch in batches)
    outputs = [batch["output_file_id"] for batch in batches if batch.get("output_file_id")]
    log.info(
        "%d batches settled (%s); %d requests completed; partial results in %s.",
        len(batches),
        statuses,
        completed,
        outputs,
    )
    return {"batches": len(batches), "statuses": statuses, "completed_requests": completed, "output_file_ids": outputs}


with DAG(
    "example_psopenai_mapped",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai"],
    params={
        "input_file_ids": Param(
            DEFAULT_INPUT_FILE_IDS,
            type="array",
            items={"type": "string"},
            minItems=1,
            description="IDs of uploaded JSONL files (purpose=batch). The defaults work only with the emulator.",
        ),
    },
):
    batches = submit_batch.expand(input_file_id=list_input_files())

    cancel_batches = StopBatchOperator.partial(
        task_id="cancel_batches",
        if_not_cancellable="succeed",
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=2.0,
        max_retry_count=5,
        max_active_tis_per_dagrun=4,
        retries=2,  # a retry takes a batch it finds cancelling as its own cancel and waits for it
        retry_delay=timedelta(seconds=10),
    ).expand(batch=batches)

    summarize(cancel_batches.output)
