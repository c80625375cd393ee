"""Options that no run can fix are refused when the DAG is parsed (building the task), with a run's messages.

What a template or an XComArg gives is checked when the task runs (tests/operators/test_stop_dags.py and
test_stop_batches.py: the *_text_input and *_text DAGs).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.callbacks import cancel_run_batches_with
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.operators import (
    StopBatchesOperator,
    StopBatchOperator,
    StopResponseOperator,
    StopThreadRunOperator,
)
from airflow_psopenai.sensors import BatchCancelledSensor, ResponseCancelledSensor, ThreadRunCancelledSensor

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

WAIT_TIMEOUT_ZERO = (
    "wait_timeout=0 would end the wait at once. For no limit of its own, leave wait_timeout out (None): "
    "the wait is then bounded by timeout_sec when above 0, else by execution_timeout, else not at all; "
    "otherwise give a number of seconds above 0."
)
BAD = [
    (
        StopBatchOperator,
        {"batch_id": "b", "if_not_cancellable": "ignore"},
        "if_not_cancellable must be one of fail, succeed, skip, got 'ignore'.",
    ),
    (
        StopBatchOperator,
        {"batch_id": "b", "poll_interval": 0},
        "poll_interval must be a number of seconds above 0, got 0.",
    ),
    (
        StopBatchOperator,
        {"batch_id": "b", "wait_timeout": -1},
        "wait_timeout must be a number of seconds above 0 or a timedelta, got -1.",
    ),
    (
        StopBatchOperator,
        {"batch_id": "b", "wait_timeout": "60"},
        "wait_timeout must be a number of seconds above 0 or a timedelta, got '60'.",
    ),
    # 0 would end every wait at once, where timeout_sec=0 means no limit.
    (StopBatchOperator, {"batch_id": "b", "wait": True, "wait_timeout": 0}, WAIT_TIMEOUT_ZERO),
    (StopBatchOperator, {"batch_id": "b", "wait_timeout": timedelta(0)}, WAIT_TIMEOUT_ZERO),
    (StopResponseOperator, {"response_id": "r", "wait_timeout": 0.0}, WAIT_TIMEOUT_ZERO),
    (StopBatchesOperator, {"batch_ids": [], "wait": True, "wait_timeout": 0}, WAIT_TIMEOUT_ZERO),
    (StopBatchOperator, {"batch_id": "b", "max_retry_count": 101}, "max_retry_count must be from 0 to 100, got 101."),
    (
        StopBatchOperator,
        {"batch_id": "b", "timeout_sec": "soon"},
        "timeout_sec must be a number of seconds, 0 or more (0 for no limit), got 'soon'.",
    ),
    (
        StopBatchOperator,
        {"batch_id": ["batch_a", "batch_b"]},
        "batch_id rendered to a list (['batch_a', 'batch_b']) where one ID is needed",
    ),
    (StopBatchOperator, {"batch_id": ""}, "batch_id is empty (''): give the ID"),
    (StopBatchOperator, {}, "batch_id is None and batch is not given"),
    (StopBatchOperator, {"batch_id": "b", "batch": {"id": "b"}}, "Give either batch= or batch_id, not both."),
    (StopBatchOperator, {"batch": {"status": "in_progress"}}, "batch has no 'id' key"),
    (StopThreadRunOperator, {"thread_id": "thread_1", "run_id": ["run_1"]}, "run_id rendered to a list"),
    (StopThreadRunOperator, {"thread_id": "", "run_id": "run_1"}, "thread_id is empty"),
    (StopResponseOperator, {"response_id": " "}, "response_id is empty"),
    (BatchCancelledSensor, {"batch_id": ("batch_a",)}, "batch_id rendered to a tuple"),
    (BatchCancelledSensor, {"batch_id": "b", "max_retry_count": -1}, "max_retry_count must be from 0 to 100, got -1."),
    (ThreadRunCancelledSensor, {"thread_id": "thread_1"}, "run_id is None"),
    (ResponseCancelledSensor, {"response_id": "r", "timeout_sec": -5}, "timeout_sec must be a number of seconds"),
    (StopBatchesOperator, {"batch_ids": [], "if_not_cancellable": "ignore"}, "if_not_cancellable must be one of"),
    (StopBatchesOperator, {"batch_ids": [], "max_concurrency": 0}, "max_concurrency must be 1 to 200, got 0."),
    (StopBatchesOperator, {"batch_ids": [], "timeout_sec": "x"}, "timeout_sec must be a number of seconds"),
    (StopBatchesOperator, {"batch_ids": ["batch_a", ""]}, "batch_ids[1] is empty"),
    (StopBatchesOperator, {"batch_ids": "batch_1"}, "the text 'batch_1' is no list"),
    (StopBatchesOperator, {"batches": [{"status": "x"}]}, "batch has no 'id' key"),
    (StopBatchesOperator, {"metadata": {"n": 1}}, "metadata must be a non-empty dict of text keys and values"),
    (
        StopBatchesOperator,
        {"metadata": {"team": "search"}, "created_after": "yesterday"},
        "created_after must be a datetime, an ISO 8601 text or epoch seconds, got 'yesterday'.",
    ),
]


@pytest.mark.parametrize(("operator_class", "arguments", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_a_wrong_option_is_refused_when_the_task_is_built(
    emulator: OpenAIEmulator, operator_class: type[Any], arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(PSOpenAIConfigurationError, match=re.escape(message)):
        operator_class(task_id="task", **arguments)
    assert emulator.journal == []


@pytest.mark.parametrize("value", [0, 201, 2.5, True, "4", None])
def test_the_set_operator_and_the_cleanup_callback_refuse_the_same_max_concurrency(value: object) -> None:
    with pytest.raises(PSOpenAIConfigurationError) as by_operator:
        StopBatchesOperator(task_id="task", batch_ids=["batch_1"], max_concurrency=value)
    with pytest.raises(PSOpenAIConfigurationError) as by_callback:
        cancel_run_batches_with(max_concurrency=value)  # type: ignore[arg-type]
    assert str(by_operator.value) == str(by_callback.value) == f"max_concurrency must be 1 to 200, got {value!r}."


def test_a_dag_file_with_a_wrong_option_is_an_import_error(airflow_db: None, tmp_path: Path) -> None:
    """What the DAG processor shows for the file, instead of a task failing on the day it runs."""
    from tests.conftest import dag_bag_class

    (tmp_path / "cleanup.py").write_text(
        "from airflow.sdk import DAG\n"
        "from airflow_psopenai.operators import StopBatchOperator\n"
        "with DAG('cleanup', schedule=None):\n"
        "    StopBatchOperator(task_id='cancel', batch_id='batch_1', trigger_rule='one_failed',\n"
        "                      if_not_cancellable='ignore')\n"
    )
    bag = dag_bag_class()(str(tmp_path))
    (error,) = bag.import_errors.values()
    assert "if_not_cancellable must be one of fail, succeed, skip, got 'ignore'." in error


def test_templates_and_xcomargs_are_left_to_the_run() -> None:
    from airflow.sdk import DAG, task

    @task
    def ids() -> list[str]:
        return ["batch_1"]

    @task
    def one() -> str:
        return "batch_1"

    with DAG("templated", schedule=None):
        StopBatchOperator(task_id="by_template", batch_id="{{ dag_run.conf['batch_id'] }}", timeout_sec=5)
        StopBatchOperator(task_id="by_xcomarg", batch_id=one(), wait_timeout=timedelta(minutes=5))
        StopBatchOperator(task_id="by_object_template", batch="{{ ti.xcom_pull(task_ids='submit') }}")
        StopThreadRunOperator(task_id="run", thread_id="thread_1", run_id="{% if true %}run_1{% endif %}")
        BatchCancelledSensor(task_id="sensor", batch=one())
        StopBatchesOperator(task_id="ids_template", batch_ids="{{ dag_run.conf['ids'] | tojson }}")
        StopBatchesOperator(task_id="ids_xcomarg", batch_ids=ids())
        StopBatchesOperator(task_id="ids_items", batch_ids=["{{ dag_run.conf['id'] }}", one()])
        StopBatchesOperator(
            task_id="metadata", metadata="{{ dag_run.conf['metadata'] | tojson }}", created_after="{{ ts }}"
        )


PARTIAL_BAD = [
    (StopBatchesOperator, {"max_concurrency": 0}, "max_concurrency must be 1 to 200, got 0."),
    (StopBatchOperator, {"if_not_cancellable": "ignore"}, "if_not_cancellable must be one of fail, succeed, skip"),
    (StopBatchOperator, {"poll_interval": 0}, "poll_interval must be a number of seconds above 0, got 0."),
    (StopResponseOperator, {"wait": True, "wait_timeout": 0}, WAIT_TIMEOUT_ZERO),
    (StopThreadRunOperator, {"max_retry_count": 101}, "max_retry_count must be from 0 to 100, got 101."),
]


@pytest.mark.parametrize(
    ("operator_class", "arguments", "message"), PARTIAL_BAD, ids=[m[:40] for _, _, m in PARTIAL_BAD]
)
def test_a_wrong_option_given_to_partial_is_refused_when_the_dag_is_parsed(
    operator_class: type[Any], arguments: dict[str, Any], message: str
) -> None:
    from airflow.sdk import DAG

    with DAG("mapped", schedule=None), pytest.raises(PSOpenAIConfigurationError, match=re.escape(message)):
        operator_class.partial(task_id="task", **arguments)


def test_partial_leaves_templates_to_the_run_and_maps_as_airflow_does() -> None:
    from airflow.sdk import DAG

    with DAG("mapped", schedule=None) as dag:
        StopBatchOperator.partial(task_id="stop", poll_interval=2, timeout_sec="{{ params.t }}").expand(
            batch_id=["batch_1", "batch_2"]
        )
        StopBatchesOperator.partial(task_id="sets", max_concurrency=5).expand(batch_ids=[["batch_1"]])
    assert {task.task_id for task in dag.tasks} == {"stop", "sets"}
    assert dag.get_task("stop").partial_kwargs["poll_interval"] == 2


def test_a_mapped_instance_is_checked_when_it_runs(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """.expand() values come at run time: a bad one fails its instance only, after the console link's XCom push."""
    batch = emulator.create_batch()
    result = run_dag("stop_batch_mapped", batch_ids=["", batch["id"]])

    assert result.task_states == {"listed_ids": "success", "stop[0]": "failed", "stop[1]": "success"}
    logs = captured_logs()
    assert "batch_id is empty (''): give the ID" in logs
    assert "XCom not found" not in logs
    assert [entry.path for entry in emulator.requests(method="POST")] == [f"/v1/batches/{batch['id']}/cancel"]


# -- an ID of another kind ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: StopBatchOperator(task_id="t", batch_id="resp_abc"),
            "batch_id 'resp_abc' is the ID of a response, not of a batch: use StopResponseOperator(response_id=...)",
        ),
        (
            lambda: StopBatchOperator(task_id="t", batch_id="ftjob-abc"),
            "batch_id 'ftjob-abc' is the ID of a fine-tuning job, not of a batch",
        ),
        (
            lambda: StopResponseOperator(task_id="t", response_id="batch_abc"),
            "response_id 'batch_abc' is the ID of a batch, not of a response: use StopBatchOperator(batch_id=...)",
        ),
        (
            lambda: StopThreadRunOperator(task_id="t", thread_id="run_1", run_id="thread_1"),
            "thread_id 'run_1' is the ID of a thread run, not of a thread",
        ),
        (
            lambda: StopThreadRunOperator(task_id="t", thread_id="thread_1", run_id="msg_1"),
            "run_id 'msg_1' is the ID of a thread message, not of a run",
        ),
        (
            lambda: BatchCancelledSensor(task_id="t", batch={"id": "run_1"}),
            "batch['id'] 'run_1' is the ID of a thread run, not of a batch: use StopThreadRunOperator",
        ),
        (
            lambda: StopBatchesOperator(task_id="t", batch_ids=["batch_1", "resp_2"]),
            "batch_ids[1] 'resp_2' is the ID of a response, not of a batch",
        ),
    ],
)
def test_an_id_of_another_kind_is_refused_naming_the_right_operator(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(PSOpenAIConfigurationError, match=re.escape(message)):
        build()


def test_ids_of_no_known_kind_and_of_their_own_kind_are_taken() -> None:
    """Gateways and emulators may use IDs of their own: only another kind's known prefix is refused."""
    StopBatchOperator(task_id="a", batch_id="bGl0ZWxsbV9wcm94eQ")
    StopBatchOperator(task_id="b", batch_id="batch_abc")
    StopThreadRunOperator(task_id="c", thread_id="thread_1", run_id="run_1")
    StopResponseOperator(task_id="d", response_id="resp_1")
    ResponseCancelledSensor(task_id="e", response_id="my-gateway-42")
    ThreadRunCancelledSensor(task_id="f", thread_id="t1", run_id="r1")
