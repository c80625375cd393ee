"""DAGs of the fine-tuning job, eval run and vector store file batch operators and sensors; IDs from the run's conf."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, get_current_context, task

from airflow_psopenai.operators import StopEvalRunOperator, StopFineTuningJobOperator, StopVectorStoreFileBatchOperator
from airflow_psopenai.sensors import (
    EvalRunCancelledSensor,
    FineTuningJobCancelledSensor,
    VectorStoreFileBatchCancelledSensor,
)

START = datetime(2026, 1, 1)


def conf_ids(*names: str) -> dict[str, str]:
    """Return the ID arguments, each rendered from the run's conf."""
    return {name: f"{{{{ dag_run.conf['{name}'] }}}}" for name in names}


# Kind -> its operator, its sensor, its ID arguments and its object argument.
KINDS: dict[str, tuple[Any, Any, dict[str, str], str]] = {
    "fine_tuning_job": (
        StopFineTuningJobOperator,
        FineTuningJobCancelledSensor,
        conf_ids("fine_tuning_job_id"),
        "fine_tuning_job",
    ),
    "eval_run": (StopEvalRunOperator, EvalRunCancelledSensor, conf_ids("eval_id", "run_id"), "eval_run"),
    "vector_store_file_batch": (
        StopVectorStoreFileBatchOperator,
        VectorStoreFileBatchCancelledSensor,
        conf_ids("vector_store_id", "batch_id"),
        "file_batch",
    ),
}
# Option set -> the stop operator's arguments.
SCENARIOS: dict[str, dict[str, Any]] = {
    "": {},
    "_pass_through": {"pass_through": True},
    "_wait": {"wait": True, "pass_through": True, "poll_interval": 0.2, "deferrable": False},
    "_wait_deferrable": {"wait": True, "pass_through": True, "poll_interval": 0.2, "deferrable": True},
    "_wait_timeout_deferrable": {"wait": True, "poll_interval": 0.2, "wait_timeout": 1, "deferrable": True},
    "_force": {"force": True, "pass_through": True},
    "_succeed": {"if_not_cancellable": "succeed", "pass_through": True},
    "_skip": {"if_not_cancellable": "skip"},
}
SENSOR_MODES: dict[str, dict[str, Any]] = {"poke": {"mode": "poke"}, "deferrable": {"deferrable": True}}

for kind, (operator, sensor, ids, object_arg) in KINDS.items():
    for suffix, arguments in SCENARIOS.items():
        with DAG(f"stop_{kind}{suffix}", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
            operator(task_id="stop", **ids, **arguments)
    with DAG(
        f"stop_{kind}_by_object",
        schedule=None,
        start_date=START,
        catchup=False,
        render_template_as_native_obj=True,
        tags=["psopenai-test"],
    ):
        operator(task_id="stop", pass_through=True, **{object_arg: "{{ dag_run.conf['object'] }}"})
    for mode, mode_arguments in SENSOR_MODES.items():
        # The cancel, then the sensor that waits until it is cancelled and passes the object on.
        with DAG(f"sensor_{kind}_{mode}", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
            operator(task_id="stop", **ids) >> sensor(
                task_id="cancelled", poke_interval=0.2, timeout=30, **ids, **mode_arguments
            )


def create_job(reuse: bool) -> str:
    """Create a fine-tuning job of the run's conf training file with the hook; fail on the first try."""
    from airflow_psopenai.hooks import PSOpenAIHook

    context = get_current_context()
    hook = PSOpenAIHook()
    try:
        job = hook.create_fine_tuning_job(
            "gpt-4o-mini-2024-07-18",
            context["dag_run"].conf["training_file"],
            suffix="nightly",
            reuse_earlier_job=reuse,
        )
    finally:
        hook.close()
    if context["ti"].try_number == 1:
        raise RuntimeError(f"try 1 fails after creating fine-tuning job {job['id']}")
    return str(job["id"])


for dag_id, reuse in (("create_fine_tuning_job_retried", True), ("create_fine_tuning_job_retried_no_reuse", False)):
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
        task(task_id="create", retries=1, retry_delay=timedelta(0))(create_job)(reuse)


def launch_then_fail() -> None:
    """Create a batch and a fine-tuning job with the hook (each tagged with the run), then fail."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        hook.create_batch("file-work")
        hook.create_fine_tuning_job("gpt-4o-mini-2024-07-18", "file-train")
    finally:
        hook.close()
    raise RuntimeError("the work failed after launching a batch and a fine-tuning job")


with DAG("run_work_cleanup", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
    from airflow_psopenai.callbacks import cancel_run_work

    task(task_id="work", on_failure_callback=cancel_run_work)(launch_then_fail)()
