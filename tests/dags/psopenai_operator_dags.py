"""DAGs the operator tests run with dag.test(); IDs come from the run's conf."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_psopenai.operators import (
    StopBatchesOperator,
    StopBatchOperator,
    StopResponseOperator,
    StopThreadRunOperator,
)

START = datetime(2026, 1, 1)
BATCH_ID = "{{ dag_run.conf['batch_id'] }}"

# One DAG per option set: dag id -> StopBatchOperator arguments.
BATCH_SCENARIOS: dict[str, dict[str, Any]] = {
    "stop_batch": {},
    "stop_batch_pass_through": {"pass_through": True},
    "stop_batch_wait": {"wait": True, "pass_through": True, "poll_interval": 0.2, "deferrable": False},
    "stop_batch_wait_deferrable": {"wait": True, "pass_through": True, "poll_interval": 0.2, "deferrable": True},
    "stop_batch_wait_timeout": {"wait": True, "poll_interval": 0.2, "wait_timeout": 1, "deferrable": False},
    "stop_batch_wait_timeout_deferrable": {"wait": True, "poll_interval": 0.2, "wait_timeout": 1, "deferrable": True},
    # The next poll would come long after the deadline: one more is made at it.
    "stop_batch_wait_long_interval": {"wait": True, "pass_through": True, "poll_interval": 60, "wait_timeout": 1.5},
    "stop_batch_wait_long_interval_deferrable": {
        "wait": True,
        "pass_through": True,
        "poll_interval": 60,
        "wait_timeout": 1.5,
        "deferrable": True,
    },
    # No wait_timeout: the deferred wait ends at execution_timeout, which Airflow leaves to the trigger.
    "stop_batch_wait_execution_timeout_deferrable": {
        "wait": True,
        "poll_interval": 0.2,
        "deferrable": True,
        "execution_timeout": timedelta(seconds=1),
    },
    "stop_batch_force": {"force": True, "pass_through": True},
    "stop_batch_force_succeed": {"force": True, "pass_through": True, "if_not_cancellable": "succeed"},
    "stop_batch_succeed": {"if_not_cancellable": "succeed", "pass_through": True},
    "stop_batch_succeed_wait": {
        "if_not_cancellable": "succeed",
        "wait": True,
        "pass_through": True,
        "poll_interval": 0.2,
    },
    "stop_batch_skip": {"if_not_cancellable": "skip"},
    "stop_batch_retries": {"max_retry_count": 3, "pass_through": True},
    # execution_timeout is only a guard here: the wait must end at wait_timeout / timeout_sec long before it.
    "stop_batch_wait_bounded": {
        "wait": True,
        "poll_interval": 0.2,
        "wait_timeout": 1,
        "max_retry_count": 4,
        "execution_timeout": timedelta(seconds=30),
    },
    "stop_batch_wait_timeout_sec": {
        "wait": True,
        "poll_interval": 0.2,
        "timeout_sec": 1,
        "execution_timeout": timedelta(seconds=30),
    },
    "stop_batch_wait_timeout_sec_deferrable": {
        "wait": True,
        "poll_interval": 0.2,
        "timeout_sec": 1,
        "deferrable": True,
        "execution_timeout": timedelta(seconds=30),
    },
    # The first try times out while the batch is cancelling; the retry must not fail on its own cancel.
    "stop_batch_task_retry": {
        "wait": True,
        "pass_through": True,
        "poll_interval": 0.2,
        "wait_timeout": 1,
        "retries": 1,
        "retry_delay": timedelta(0),
    },
    "stop_batch_task_retry_deferrable": {
        "wait": True,
        "pass_through": True,
        "poll_interval": 0.2,
        "wait_timeout": 1,
        "retries": 1,
        "retry_delay": timedelta(0),
        "deferrable": True,
    },
    "stop_batch_task_retry_force": {
        "force": True,
        "wait": True,
        "pass_through": True,
        "poll_interval": 0.2,
        "wait_timeout": 1,
        "retries": 1,
        "retry_delay": timedelta(0),
    },
}

for dag_id, arguments in BATCH_SCENARIOS.items():
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
        StopBatchOperator(task_id="stop", batch_id=BATCH_ID, **arguments)


class StopBatchTwiceInOneTry(StopBatchOperator):
    """Runs twice under one try number, as Airflow 3.3 can run a retried deferred task (apache/airflow#67287)."""

    def execute(self, context: Any) -> Any:
        super().execute(context)
        return super().execute(context)


class StopThreadRunTwiceInOneTry(StopThreadRunOperator):
    """The same, for a run."""

    def execute(self, context: Any) -> Any:
        super().execute(context)
        return super().execute(context)


class StopBatchesTwiceInOneTry(StopBatchesOperator):
    """The same, for a set."""

    def execute(self, context: Any) -> Any:
        super().execute(context)
        return super().execute(context)


@task
def past_the_runs_first_second() -> None:
    """The API's cancel times are whole seconds: a cancel within the run's first second is not told apart."""
    time.sleep(1.1)


with DAG("stop_batch_same_try_twice", schedule=None, start_date=START, catchup=False):
    past_the_runs_first_second() >> StopBatchTwiceInOneTry(task_id="stop", batch_id=BATCH_ID, pass_through=True)

with DAG("stop_run_forced_same_try_twice", schedule=None, start_date=START, catchup=False):
    past_the_runs_first_second() >> StopThreadRunTwiceInOneTry(
        task_id="stop",
        thread_id="{{ dag_run.conf['thread_id'] }}",
        run_id="{{ dag_run.conf['run_id'] }}",
        force=True,
        wait=True,
        poll_interval=0.2,
        pass_through=True,
    )

with DAG("stop_batches_same_try_twice", schedule=None, start_date=START, catchup=False):
    past_the_runs_first_second() >> StopBatchesTwiceInOneTry(
        task_id="stop", batch_ids="{{ dag_run.conf['batch_ids'] | tojson }}", pass_through=True
    )

with DAG("stop_run_wait", schedule=None, start_date=START, catchup=False):
    StopThreadRunOperator(
        task_id="stop",
        thread_id="{{ dag_run.conf['thread_id'] }}",
        run_id="{{ dag_run.conf['run_id'] }}",
        wait=True,
        pass_through=True,
        poll_interval=0.2,
    )

with DAG("stop_run_retries", schedule=None, start_date=START, catchup=False):
    StopThreadRunOperator(
        task_id="stop",
        thread_id="{{ dag_run.conf['thread_id'] }}",
        run_id="{{ dag_run.conf['run_id'] }}",
        max_retry_count=2,
        pass_through=True,
    )

with DAG("stop_run_by_object", schedule=None, start_date=START, catchup=False, render_template_as_native_obj=True):
    StopThreadRunOperator(task_id="stop", run="{{ dag_run.conf['run'] }}", pass_through=True)


with DAG("stop_response_wait", schedule=None, start_date=START, catchup=False):
    StopResponseOperator(
        task_id="stop", response_id="{{ dag_run.conf['response_id'] }}", wait=True, pass_through=True, deferrable=True
    )


@task(multiple_outputs=False)
def submitted(**context: Any) -> dict[str, Any]:
    """Stand in for the task that submitted the batch: push the batch object."""
    batch: dict[str, Any] = context["dag_run"].conf["batch"]
    return batch


@task(multiple_outputs=True)
def submitted_fields(**context: Any) -> dict[str, Any]:
    """Push the batch's fields as separate XCom keys (those with a value: Airflow 3.0 cannot push None)."""
    fields: dict[str, Any] = context["dag_run"].conf["batch"]
    return {key: value for key, value in fields.items() if value is not None}


@task
def listed_ids(**context: Any) -> list[str]:
    """Push the IDs of every batch the run launched."""
    ids: list[str] = context["dag_run"].conf["batch_ids"]
    return ids


with DAG("stop_batch_xcom_template", schedule=None, start_date=START, catchup=False):
    submitted() >> StopBatchOperator(
        task_id="stop", batch_id="{{ ti.xcom_pull(task_ids='submitted')['id'] }}", pass_through=True
    )

with DAG("stop_batch_xcom_object_text", schedule=None, start_date=START, catchup=False):
    # Non-native rendering turns the dict into its text: the operator reads it back.
    submitted() >> StopBatchOperator(
        task_id="stop", batch="{{ ti.xcom_pull(task_ids='submitted') }}", pass_through=True
    )

with DAG("stop_batch_xcom_native", schedule=None, start_date=START, catchup=False, render_template_as_native_obj=True):
    submitted() >> StopBatchOperator(
        task_id="stop", batch="{{ ti.xcom_pull(task_ids='submitted') }}", pass_through=True
    )

with DAG("stop_batch_xcomarg", schedule=None, start_date=START, catchup=False):
    StopBatchOperator(task_id="stop", batch=submitted(), pass_through=True)

with DAG("stop_batch_xcomarg_key", schedule=None, start_date=START, catchup=False):
    # ["id"] on an XComArg selects the XCom key "id" pushed by multiple_outputs, not a dict item.
    StopBatchOperator(task_id="stop", batch_id=submitted_fields()["id"], pass_through=True)

with DAG("stop_batch_mapped", schedule=None, start_date=START, catchup=False):
    StopBatchOperator.partial(task_id="stop", pass_through=True).expand(batch_id=listed_ids())

# Rendered values as they arrive, without text conversion: None, lists, numbers, dicts.
with DAG("stop_batch_native_input", schedule=None, start_date=START, catchup=False, render_template_as_native_obj=True):
    StopBatchOperator(
        task_id="stop", batch_id="{{ dag_run.conf.get('batch_id') }}", batch="{{ dag_run.conf.get('batch') }}"
    )

with DAG("stop_batch_text_input", schedule=None, start_date=START, catchup=False):
    StopBatchOperator(task_id="stop", batch_id="{{ dag_run.conf.get('batch_id') }}")
