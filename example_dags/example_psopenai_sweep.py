"""A maintenance DAG: every 15 minutes, cancel this deployment's batches whose DAG run failed.

The callbacks and the listener act when a run fails; a failure none of them saw (a DAG processor that was
down, a callback that timed out, a DAG without one, the listener off) leaves its batches running. This
sweep finds them by their tags: ``airflow_deployment`` (``[psopenai] deployment``), ``airflow_dag_id``
and ``airflow_run_id``, as ``PSOpenAIHook.create_batch`` and ``run_tags(context)`` set them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from airflow_psopenai.operators import StopOrphanedBatchesOperator

with DAG(
    "example_psopenai_sweep",
    schedule=timedelta(minutes=15),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["psopenai", "example"],
    doc_md=__doc__,
):
    StopOrphanedBatchesOperator(
        task_id="sweep",
        run_states=("failed",),  # add "success" for DAGs that must leave nothing running
        lookback=timedelta(hours=48),
        sweep_timeout=timedelta(minutes=10),
    )
