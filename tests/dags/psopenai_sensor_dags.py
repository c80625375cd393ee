"""DAGs the sensor tests run with dag.test(); IDs come from the run's conf."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_psopenai.sensors import BatchCancelledSensor, ResponseCancelledSensor, ThreadRunCancelledSensor

START = datetime(2026, 1, 1)
MODES: dict[str, dict[str, Any]] = {
    "poke": {"mode": "poke"},
    "reschedule": {"mode": "reschedule"},
    "deferrable": {"deferrable": True},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "": {"timeout": 30},
    # execution_timeout is only a guard: the sensor's own timeout must end a hanging poke long before it.
    "_timeout": {"timeout": 1, "execution_timeout": timedelta(seconds=30)},
    "_soft_fail": {"timeout": 1, "soft_fail": True},
    "_never_fail": {"timeout": 1, "never_fail": True},
}


@task(multiple_outputs=False)
def partial_results(batch: dict[str, Any]) -> dict[str, Any]:
    """Read what a downstream task recovers from the cancelled batch."""
    return {"request_counts": batch["request_counts"], "output_file_id": batch["output_file_id"]}


for mode, mode_arguments in MODES.items():
    for suffix, variant_arguments in VARIANTS.items():
        with DAG(f"sensor_batch_{mode}{suffix}", schedule=None, start_date=START, catchup=False):
            sensor = BatchCancelledSensor(
                task_id="cancelled",
                batch_id="{{ dag_run.conf['batch_id'] }}",
                poke_interval=0.2,
                max_retry_count=0,
                **mode_arguments,
                **variant_arguments,
            )
            partial_results(sensor.output)

    with DAG(f"sensor_run_{mode}", schedule=None, start_date=START, catchup=False):
        ThreadRunCancelledSensor(
            task_id="cancelled",
            thread_id="{{ dag_run.conf['thread_id'] }}",
            run_id="{{ dag_run.conf['run_id'] }}",
            poke_interval=0.2,
            timeout=30,
            **mode_arguments,
        )

with DAG("sensor_response_deferrable", schedule=None, start_date=START, catchup=False):
    ResponseCancelledSensor(
        task_id="cancelled",
        response_id="{{ dag_run.conf['response_id'] }}",
        poke_interval=0.2,
        timeout=30,
        deferrable=True,
    )
