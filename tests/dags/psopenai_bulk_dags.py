"""DAGs the StopBatchesOperator and run-tag tests run with dag.test(); selections come from the run's conf."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_psopenai.operators import StopBatchesOperator

START = datetime(2026, 1, 1)
RUN_SELECTOR = {"airflow_dag_id": "{{ dag.dag_id }}", "airflow_run_id": "{{ run_id }}"}

# One DAG per option set: dag id -> StopBatchesOperator arguments.
SCENARIOS: dict[str, dict[str, Any]] = {
    "stop_batches_ids": {"batch_ids": "{{ dag_run.conf['batch_ids'] | tojson }}", "pass_through": True},
    "stop_batches_ids_succeed": {
        "batch_ids": "{{ dag_run.conf['batch_ids'] | tojson }}",
        "pass_through": True,
        "if_not_cancellable": "succeed",
    },
    "stop_batches_wait": {
        "batch_ids": "{{ dag_run.conf['batch_ids'] | tojson }}",
        "wait": True,
        "pass_through": True,
        "poll_interval": 0.2,
        "deferrable": False,
    },
    "stop_batches_wait_deferrable": {
        "batch_ids": "{{ dag_run.conf['batch_ids'] | tojson }}",
        "wait": True,
        "pass_through": True,
        "poll_interval": 0.2,
        "deferrable": True,
    },
    "stop_batches_wait_timeout_deferrable": {
        "batch_ids": "{{ dag_run.conf['batch_ids'] | tojson }}",
        "wait": True,
        "poll_interval": 0.2,
        "wait_timeout": 1,
        "deferrable": True,
    },
    "stop_batches_ids_timeout": {"batch_ids": "{{ dag_run.conf['batch_ids'] | tojson }}", "timeout_sec": 1},
    "stop_batches_objects": {"batches": "{{ dag_run.conf['batches'] | tojson }}", "pass_through": True},
    "stop_batches_metadata": {"metadata": "{{ dag_run.conf['metadata'] | tojson }}", "created_after": 0},
    "stop_batches_text": {"batch_ids": "{{ dag_run.conf.get('batch_ids') }}"},
    "stop_batches_bad_metadata": {"metadata": "{{ dag_run.conf.get('metadata') }}"},
    "stop_batches_retry": {
        "batch_ids": "{{ dag_run.conf['batch_ids'] | tojson }}",
        "wait": True,
        "pass_through": True,
        "poll_interval": 0.2,
        "wait_timeout": 1,
        "retries": 1,
        "retry_delay": timedelta(0),
    },
}

for dag_id, arguments in SCENARIOS.items():
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
        StopBatchesOperator(task_id="stop", **arguments)


@task
def create_tagged(**context: Any) -> list[str]:
    """Create batches with the hook in a running task: each gets the run tags."""
    from airflow_psopenai.hooks import PSOpenAIHook

    count = int(context["dag_run"].conf.get("count", 3))
    hook = PSOpenAIHook()
    try:
        return [str(hook.create_batch("file-test", metadata={"team": "search"})["id"]) for _ in range(count)]
    finally:
        hook.close()


with DAG("stop_batches_of_this_run", schedule=None, start_date=START, catchup=False):
    create_tagged() >> StopBatchesOperator(task_id="stop", metadata=RUN_SELECTOR, pass_through=True)
