"""A late run's batches cancelled by its deadline's callback, and a retry that pays for no second batch.

The callback is awaited as Airflow's triggerer awaits a deadline's ``AsyncCallback``: the trigger
Airflow builds for it (``CallbackTrigger``, 3.1's ``DeadlineCallbackTrigger``) runs with the context
Airflow builds (``handle_miss``: the REST API's DAG run as a dict, and the deadline).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from airflow_psopenai.callbacks import acancel_run_batches, cancel_run_batches
from airflow_psopenai.compat import DEADLINE_ALERTS, MISSING_DEADLINE_ALERTS
from airflow_psopenai.testing import Fault
from tests.conftest import deadline_context, run_as_the_triggerer

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from airflow_psopenai.testing.dag_tests import DagRunner
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

needs_deadline_alerts = pytest.mark.skipif(not DEADLINE_ALERTS, reason=f"{MISSING_DEADLINE_ALERTS}; this is 3.0")
CALLBACK_PATH = "airflow_psopenai.callbacks.acancel_run_batches"


def cancels(emulator: OpenAIEmulator) -> list[str]:
    return [entry.path.split("/")[3] for entry in emulator.requests(method="POST", path="/v1/batches/*/cancel")]


def late_run(emulator: OpenAIEmulator, run_dag: RunDag) -> tuple[DagRunResult, list[str], list[str]]:
    """Run a DAG whose three tagged batches still run when it is over; return it, its batches and bystanders."""
    result = run_dag("late_run_batches")
    assert result.state == "success"
    batch_ids: list[str] = result.xcom("create_tagged")
    tags = {"airflow_dag_id": "late_run_batches", "airflow_run_id": result.dag_run.run_id}
    already = str(emulator.create_batch(status="cancelling", metadata={**tags, "airflow_deployment": "default"})["id"])
    others = [
        str(emulator.create_batch(metadata={**tags, "airflow_run_id": "another-run"})["id"]),
        str(emulator.create_batch()["id"]),
        already,
    ]
    return result, batch_ids, others


@needs_deadline_alerts
def test_the_deadline_callback_cancels_the_late_runs_batches_once_as_the_triggerer_awaits_it(
    emulator: OpenAIEmulator, run_dag: RunDag, caplog: pytest.LogCaptureFixture
) -> None:
    result, batch_ids, others = late_run(emulator, run_dag)
    context = deadline_context(result.dag_run.id)
    caplog.set_level("INFO", logger="airflow_psopenai")

    events = run_as_the_triggerer(CALLBACK_PATH, {"timeout_sec": 30}, context)

    assert [event["state"] for event in events] == ["running", "success"]
    # Text: Airflow stores the body in its callback table's text column (a dict would stop the triggerer).
    assert events[1]["body"] == (
        f"acancel_run_batches: run {result.dag_run.run_id!r} of 'late_run_batches' (deployment 'default'): "
        "4 batches tagged with it, "
        "3 running: 3 cancels sent, 0 could not be cancelled."
    )
    assert sorted(cancels(emulator)) == sorted(batch_ids)
    assert all(emulator.get_batch(batch_id)["status"] == "in_progress" for batch_id in others[:2])
    for batch_id in batch_ids:
        assert (
            f"acancel_run_batches (deployment 'default'): batch {batch_id!r}: found in_progress, cancel requested"
            in caplog.text
        )
    assert "4 batches tagged with it, 3 running: 3 cancels sent, 0 could not be cancelled." in caplog.text
    assert emulator.api_key not in caplog.text
    assert emulator.api_key not in json.dumps(events)

    # Idempotent: a second deadline (or a failure callback after it) sends no cancel.
    again = run_as_the_triggerer(CALLBACK_PATH, {}, context)
    assert again[1]["body"].endswith("4 batches tagged with it, 0 running: 0 cancels sent, 0 could not be cancelled.")
    assert sorted(cancels(emulator)) == sorted(batch_ids)


@needs_deadline_alerts
def test_the_sync_callback_takes_the_deadlines_context_and_kwargs(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """Airflow 3.2+'s SyncCallback calls ``cancel_run_batches(**kwargs, context=context)`` in the executor."""
    result, batch_ids, _ = late_run(emulator, run_dag)
    cancel_run_batches(conn_id="psopenai_default", timeout_sec=30, context=deadline_context(result.dag_run.id))
    assert sorted(cancels(emulator)) == sorted(batch_ids)


def test_the_async_callback_takes_a_tasks_context(emulator: OpenAIEmulator) -> None:
    tags = {"airflow_deployment": "default", "airflow_dag_id": "pipeline", "airflow_run_id": "run-1"}
    mine = [str(emulator.create_batch(metadata=tags)["id"]) for _ in range(2)]
    emulator.create_batch(metadata={**tags, "airflow_run_id": "run-2"})
    dag_run = SimpleNamespace(dag_id="pipeline", run_id="run-1", run_after=datetime.now(UTC))
    summary = asyncio.run(acancel_run_batches({"dag_run": dag_run, "ti": object()}))
    assert summary is not None
    assert summary.endswith("2 batches tagged with it, 2 running: 2 cancels sent, 0 could not be cancelled.")
    assert sorted(cancels(emulator)) == sorted(mine)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.hang(None), id="a hanging list"),
        pytest.param(
            Fault.answer(
                200,
                json.dumps(
                    {
                        "object": "list",
                        "data": [{"id": "batch_same", "object": "batch", "created_at": 4102444800, "status": "x"}],
                        "has_more": True,
                    }
                ),
                content_type="application/json",
            ),
            id="a gateway that answers the same page for ever",
        ),
    ],
)
def test_the_async_callback_never_raises_and_is_bounded_as_a_whole(
    emulator: OpenAIEmulator, caplog: pytest.LogCaptureFixture, fault: Fault
) -> None:
    emulator.add_fault(fault, method="GET", path="/v1/batches", times=100_000)
    dag_run = {"dag_id": "pipeline", "dag_run_id": "run-1", "run_after": "2026-01-01T00:00:00Z"}
    started = time.monotonic()
    summary = asyncio.run(acancel_run_batches({"dag_run": dag_run}, timeout_sec=2))
    assert time.monotonic() - started < 2 + 10  # the bound, plus a loaded machine's slack
    # The listing ends within its part of the budget, and the summary says what it could not read.
    assert summary is not None
    assert "0 batches tagged with it, 0 running: 0 cancels sent, 0 could not be cancelled. Not looked at: the " in (
        summary
    )
    assert summary in caplog.text
    assert cancels(emulator) == []


def test_the_async_callback_names_what_is_wrong_and_never_raises(
    emulator: OpenAIEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    assert asyncio.run(acancel_run_batches({"deadline": {}})) is None
    assert "The callback's context names no DAG run" in caplog.text
    dag_run = {"dag_id": "pipeline", "dag_run_id": "run-1", "run_after": None}
    assert asyncio.run(acancel_run_batches({"dag_run": dag_run}, conn_id="psopenai_missing")) is None
    assert "'psopenai_missing' is not defined" in caplog.text
    assert emulator.journal == []


def test_deadline_alerts_import_from_where_this_airflow_has_them() -> None:
    from airflow_psopenai import compat

    if DEADLINE_ALERTS:
        alert = compat.DeadlineAlert(
            reference=compat.DeadlineReference.DAGRUN_QUEUED_AT,
            interval=timedelta(hours=1),
            callback=compat.AsyncCallback(acancel_run_batches, kwargs={"conn_id": "c", "timeout_sec": 60}),
        )
        assert alert.callback.path == CALLBACK_PATH
    else:
        with pytest.raises(ImportError, match=r"Deadline Alerts \(.*\) came with Airflow 3\.1"):
            from airflow_psopenai.compat import DeadlineAlert  # noqa: F401


# -- a retry pays for no second batch ----------------------------------------------------------------------------


def batch_posts(emulator: OpenAIEmulator) -> list[Any]:
    return emulator.requests(method="POST", path="/v1/batches")


def test_a_retry_returns_the_batch_its_first_try_created(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    result = run_dag("create_batch_retried", input_file_id="file-retried")
    assert result.task_states["create"] == "success"
    assert result.tries["create"] == 2
    assert len(batch_posts(emulator)) == 1
    batch = emulator.get_batch(result.xcom("create"))
    assert batch["input_file_id"] == "file-retried"
    assert batch["metadata"]["airflow_task_id"] == "create"
    assert f"Batch {batch['id']!r} (in_progress) was created by an earlier try of this task instance" in (
        captured_logs()
    )


def test_the_nth_call_of_a_retry_returns_the_nth_batch_of_the_try_before_for_one_list_page(
    emulator: OpenAIEmulator, run_dag: RunDag
) -> None:
    result = run_dag("create_batches_retried", input_file_id="file-same")
    assert result.task_states["create_three_then_fail"] == "success"
    assert len(batch_posts(emulator)) == 3  # try 1 created three batches of one input file; try 2 took them over
    # One list page per try, and one look for a duplicate after each of the three creates.
    assert len(emulator.requests(method="GET", path="/v1/batches")) == 2 + 3
    listed = httpx.get(f"{emulator.api_base}/batches", headers={"Authorization": f"Bearer {emulator.api_key}"}).json()[
        "data"
    ]
    assert result.xcom("create_three_then_fail") == [batch["id"] for batch in reversed(listed)]  # in creation order


def test_a_list_the_gateway_does_not_serve_never_keeps_a_task_from_creating_its_batch(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """The list only finds an earlier try's batch: when it fails, each try warns and creates, as before."""
    emulator.add_fault(
        Fault.answer(404, '{"error": {"message": "Not here."}}'), method="GET", path="/v1/batches", times=10
    )
    result = run_dag("create_batch_retried", input_file_id="file-unlisted")
    assert result.task_states["create"] == "success"
    assert len(batch_posts(emulator)) == 2
    # One warning per try, told apart by the request id: Airflow 3.0 prints a task's lines twice (its
    # dag.test() handler on airflow.task, and the root logger's).
    warned = re.findall(
        r"Could not look for a batch an earlier try of this task created.*request id (req_\w+)", captured_logs()
    )
    assert len(set(warned)) == 2, warned
    # One look per try for an earlier batch, one for a duplicate after each create.
    assert len(emulator.requests(method="GET", path="/v1/batches")) == 2 + 2


def test_reuse_earlier_batch_false_creates_again(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("create_batch_retried_no_reuse", input_file_id="file-retried")
    assert result.task_states["create"] == "success"
    assert len(batch_posts(emulator)) == 2


def test_a_try_run_twice_returns_the_batch_its_first_run_created(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("create_batch_same_try_twice", input_file_id="file-twice")
    assert result.task_states["create_in_a_try_run_twice"] == "success"
    created = result.xcom("create_in_a_try_run_twice")
    assert created["first_run_exit_code"] == 0
    assert len(batch_posts(emulator)) == 1
    assert emulator.get_batch(created["batch_id"])["input_file_id"] == "file-twice"


def test_outside_a_task_every_call_creates(emulator: OpenAIEmulator) -> None:
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    first, second = (hook.create_batch("file-same")["id"] for _ in range(2))
    assert first != second
    # No look for an earlier try's batch: only the look for a duplicate after each create.
    assert len(emulator.requests(method="GET", path="/v1/batches")) == 2
    assert len(batch_posts(emulator)) == 2


def test_a_missed_deadlines_sync_callback_cancels_the_runs_batches_while_it_waits(
    emulator: OpenAIEmulator, run_dag: DagRunner
) -> None:
    """run_dag.missing_deadlines calls a SyncCallback as the executor does, with the context Airflow builds."""
    from airflow_psopenai.testing.dag_tests import deadline_run_unsupported

    if not DEADLINE_ALERTS:
        pytest.skip(f"{MISSING_DEADLINE_ALERTS}; this is 3.0")
    if reason := deadline_run_unsupported():
        pytest.skip(reason)

    result = run_dag.missing_deadlines("late_run_sync_deadline", once_running="wait_until_ended", max_wait_seconds=120)

    (missed,) = result.missed_deadlines
    assert (missed.callback_path, missed.kind, missed.state) == (
        "airflow_psopenai.callbacks.cancel_run_batches",
        "SyncCallback",
        "success",
    ), missed.output
    assert result.state == "success"
    batch_ids = result.xcom("create_two")
    assert sorted(cancels(emulator)) == sorted(batch_ids)
    assert set(result.xcom("wait_until_ended").values()) <= {"cancelling", "cancelled"}


def test_a_run_that_ends_before_its_late_task_starts_misses_no_deadline(
    emulator: OpenAIEmulator, run_dag: DagRunner
) -> None:
    from airflow_psopenai.testing.dag_tests import deadline_run_unsupported

    if not DEADLINE_ALERTS:
        pytest.skip(f"{MISSING_DEADLINE_ALERTS}; this is 3.0")
    if reason := deadline_run_unsupported():
        pytest.skip(reason)

    result = run_dag.missing_deadlines("deadline_run_in_time", once_running="no_such_task")

    assert result.state == "success"
    assert result.missed_deadlines == []
    assert cancels(emulator) == []


@needs_deadline_alerts
def test_every_line_the_deadline_callback_logs_names_the_run(
    emulator: OpenAIEmulator, run_dag: RunDag, caplog: pytest.LogCaptureFixture
) -> None:
    """The triggerer runs the callback outside any task (its lines say dag_id=None run_id=None): its own say the run."""
    result, batch_ids, _ = late_run(emulator, run_dag)
    caplog.set_level("INFO", logger="airflow_psopenai")

    run_as_the_triggerer(CALLBACK_PATH, {"timeout_sec": 30}, deadline_context(result.dag_run.id))

    lines = [record.getMessage() for record in caplog.records if record.name == "airflow_psopenai.callbacks"]
    assert len(lines) >= len(batch_ids) + 1  # one per batch, and the summary
    run = f"dag_id=late_run_batches run_id={result.dag_run.run_id}"
    assert all(run in line for line in lines), lines


def test_a_failing_callback_names_the_run_too(emulator: OpenAIEmulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="airflow_psopenai")
    context = {"dag_run": {"dag_id": "d", "dag_run_id": "r", "run_after": "2026-01-01T00:00:00+00:00"}}
    assert asyncio.run(acancel_run_batches(context, conn_id="no_such_connection", timeout_sec=5)) is None
    lines = [record.getMessage() for record in caplog.records if record.name == "airflow_psopenai.callbacks"]
    assert lines
    assert all("dag_id=d run_id=r" in line for line in lines), lines
