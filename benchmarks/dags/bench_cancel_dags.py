"""The bulk-cancel benchmark's DAGs: one task for the whole set against one mapped task instance per batch.

Both take the batch IDs from the run's conf through the same upstream task and use the operators'
defaults but for the wait (cancel, then wait deferred until every batch is cancelled) and the retries
(a rate-limited cancel is sent again up to 5 times, as in the cancel-throughput benchmark; the default,
PSOpenAI's, is none). Two task retries ride out apache/airflow#67287 (Airflow 3.3 can fail a deferred
task whose trigger fires within seconds); a retry sends no second cancel.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_psopenai.operators import StopBatchesOperator, StopBatchOperator

START = datetime(2026, 1, 1)
OPTIONS: dict[str, Any] = {
    "wait": True,
    "deferrable": True,
    "max_retry_count": 5,
    "retries": 2,
    "retry_delay": timedelta(seconds=1),
}


@task
def batch_ids(**context: Any) -> list[str]:
    """Return the IDs the benchmark put in the run's conf."""
    return list(context["dag_run"].conf["batch_ids"])


with DAG("bench_bulk_cancel", schedule=None, start_date=START, catchup=False, tags=["psopenai-bench"]):
    StopBatchesOperator(task_id="stop_all", batch_ids=batch_ids(), **OPTIONS)

with DAG("bench_mapped_cancel", schedule=None, start_date=START, catchup=False, tags=["psopenai-bench"]):
    StopBatchOperator.partial(task_id="stop_each", **OPTIONS).expand(batch_id=batch_ids())
