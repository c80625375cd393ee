"""DAGs the sweep tests run with dag.test(): pipelines that leave a batch behind, and the sweeps."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from airflow_psopenai.operators import StopOrphanedBatchesOperator

START = datetime(2026, 1, 1)


@task
def submit(fail: bool) -> str:
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        batch_id = str(hook.create_batch("file-sweep")["id"])
    finally:
        hook.close()
    if fail:
        raise RuntimeError(f"processing failed after batch {batch_id} was submitted")
    return batch_id


# No callback and no teardown: only the sweep can cancel what the failed run left.
with DAG("sweep_failing_pipeline", schedule=None, start_date=START, catchup=False):
    submit(fail=True)

with DAG("sweep_succeeding_pipeline", schedule=None, start_date=START, catchup=False):
    submit(fail=False)

with DAG("sweep", schedule=None, start_date=START, catchup=False):
    StopOrphanedBatchesOperator(task_id="sweep")

with DAG("sweep_dry_run", schedule=None, start_date=START, catchup=False):
    StopOrphanedBatchesOperator(task_id="sweep", dry_run=True)

with DAG("sweep_missing_runs", schedule=None, start_date=START, catchup=False):
    StopOrphanedBatchesOperator(task_id="sweep", run_states=("failed", "missing"))
