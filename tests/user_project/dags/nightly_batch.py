"""Submit a batch; when the work that needs it fails, cancel the batch and wait until it is cancelled."""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.operators import StopBatchOperator


@task
def submit_batch(params: dict[str, Any]) -> dict[str, Any]:
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()  # the psopenai_default connection
    try:
        return hook.create_batch(input_file_id=params["input_file_id"])
    finally:
        hook.close()


@task(retries=0)
def process_results(batch: dict[str, Any], params: dict[str, Any]) -> None:
    if params["fail"]:
        raise RuntimeError(f"processing failed; batch {batch['id']} is no longer wanted")


with DAG(
    "nightly_batch",
    schedule=None,
    params={"input_file_id": Param("file-abc123", type="string"), "fail": Param(False, type="boolean")},
):
    batch = submit_batch()
    processed = process_results(batch)
    cancel = StopBatchOperator(
        task_id="cancel_batch",
        batch=batch,
        trigger_rule="one_failed",  # only when a task upstream failed
        wait=True,
        pass_through=True,
    )
    processed >> cancel
