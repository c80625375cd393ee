"""StopBatchesOperator, run tags and the safety-net callback, in real DAG runs (dag.test) against the emulator."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.callbacks import cancel_run_batches, cancel_run_batches_with
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.operators import StopBatchesOperator
from airflow_psopenai.run_tags import tagged_metadata
from airflow_psopenai.testing import Fault

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]


def cancels(emulator: OpenAIEmulator) -> list[str]:
    return [entry.path.split("/")[3] for entry in emulator.requests(method="POST", path="*/cancel")]


def running(emulator: OpenAIEmulator, count: int, **kwargs: Any) -> list[str]:
    return [str(emulator.create_batch(**kwargs)["id"]) for _ in range(count)]


def test_cancels_every_batch_of_a_list_once_and_passes_them_on_in_order(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    ids = running(emulator, 5)
    result = run_dag("stop_batches_ids", batch_ids=[*ids, ids[0]])  # a repeated ID is cancelled once
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(ids)
    returned = result.xcom("stop")
    assert [batch["id"] for batch in returned] == ids
    assert {batch["status"] for batch in returned} == {"cancelling"}
    logs = captured_logs()
    assert all(f"batch {batch_id!r}: found in_progress, cancel requested, now cancelling" in logs for batch_id in ids)
    assert "5 batches: 5 cancel requested; 0 failed." in logs


def test_mixed_statuses_and_one_failure_fail_the_task_at_the_end_naming_it(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    ids = running(emulator, 3)
    done = str(emulator.create_batch(status="completed")["id"])
    result = run_dag("stop_batches_ids", batch_ids=[ids[0], done, "batch_unknown", *ids[1:]])
    assert result.state == "failed"
    assert sorted(cancels(emulator)) == sorted(ids)  # every other batch was still attempted
    logs = captured_logs()
    assert "2 of 5 batches failed" in logs
    # The same message as StopBatchOperator's for the same batch.
    assert (
        f'batch {done!r}: found completed, failed: Cannot cancel batch with status "completed": batch {done!r}.' in logs
    )
    assert "batch 'batch_unknown'" in logs


def test_if_not_cancellable_succeed_lets_settled_batches_pass(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    ids = running(emulator, 2)
    done = str(emulator.create_batch(status="cancelled")["id"])
    result = run_dag("stop_batches_ids_succeed", batch_ids=[*ids, done])
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(ids)
    assert [batch["status"] for batch in result.xcom("stop")] == ["cancelling", "cancelling", "cancelled"]


@pytest.mark.parametrize("dag_id", ["stop_batches_wait", "stop_batches_wait_deferrable"])
def test_wait_covers_the_whole_set(emulator: OpenAIEmulator, run_dag: RunDag, dag_id: str) -> None:
    emulator.cancel_delay = 0.5
    ids = running(emulator, 6)
    result = run_dag(dag_id, batch_ids=ids)
    assert result.state == "success"
    assert [batch["status"] for batch in result.xcom("stop")] == ["cancelled"] * 6
    assert all(batch.get("cancelled_at") for batch in result.xcom("stop"))  # whole objects with pass_through
    assert len(cancels(emulator)) == 6


def test_a_deferred_set_times_out_at_one_deadline(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    emulator.cancel_delay = 60
    ids = running(emulator, 3)
    started = time.monotonic()
    result = run_dag("stop_batches_wait_timeout_deferrable", batch_ids=ids)
    assert result.state == "failed"
    assert time.monotonic() - started < 30
    assert "3 of 3 batches failed" in captured_logs()
    # Named as the wait in the worker names it.
    assert "did not settle before its wait_timeout of 1 s (last status: cancelling)" in captured_logs()


def test_the_looks_before_the_cancels_read_the_list_not_each_batch(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """Each batch is looked at before its cancel (PSOpenAI's rule without force): fresh batches all sit on the
    list's first page, so one page read stands for a GET each, and a set costs about N + N/100 requests."""
    ids = running(emulator, 30)
    result = run_dag("stop_batches_ids", batch_ids=ids)
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(ids)
    assert [batch["status"] for batch in result.xcom("stop")] == ["cancelling"] * 30
    assert len(emulator.requests(method="GET", path="/v1/batches")) == 1
    assert emulator.requests(method="GET", path="/v1/batches/*") == []


def test_batches_deep_in_the_list_are_looked_at_one_by_one(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """Batches no first page holds are not searched for page after page: each gets its own GET."""
    old = running(emulator, 3)
    running(emulator, 100)  # newer: the first page holds none of the old three
    result = run_dag("stop_batches_ids", batch_ids=old)
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(old)
    assert len(emulator.requests(method="GET", path="/v1/batches")) == 1
    assert sorted(
        entry.path.rsplit("/", 1)[1] for entry in emulator.requests(method="GET", path="/v1/batches/*")
    ) == sorted(old)


def test_a_list_page_lost_to_a_server_error_leaves_each_look_to_its_own_get(
    emulator: OpenAIEmulator, run_dag: RunDag
) -> None:
    """One failed page (no retry configured: PSOpenAI's default) must not fail the whole set's looks."""
    ids = running(emulator, 5)
    emulator.add_fault(Fault.server_error(503), method="GET", path="/v1/batches")
    result = run_dag("stop_batches_ids", batch_ids=ids)
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(ids)
    assert [entry.status for entry in emulator.requests(method="GET", path="/v1/batches")] == [503]
    assert len(emulator.requests(method="GET", path="/v1/batches/*")) == 5


def test_a_hanging_list_page_holds_the_looks_only_until_the_request_timeout(
    emulator: OpenAIEmulator, run_dag: RunDag
) -> None:
    """The looks wait on one page: a page that hangs ends at ``timeout_sec`` and the looks take their own GETs."""
    ids = running(emulator, 4)
    emulator.add_fault(Fault.hang(None), method="GET", path="/v1/batches")
    started = time.monotonic()
    result = run_dag("stop_batches_ids_timeout", batch_ids=ids)
    assert result.state == "success"
    assert time.monotonic() - started < 15
    assert sorted(cancels(emulator)) == sorted(ids)
    assert [entry.status for entry in emulator.requests(method="GET", path="/v1/batches")] == [None]
    assert len(emulator.requests(method="GET", path="/v1/batches/*")) == 4


def test_a_corrupt_answer_to_one_cancel_fails_that_batch_and_the_set_names_it(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """A body that does not match its Content-Encoding is an invalid response of that batch: every other batch
    is still cancelled and logged, and the task fails at the end naming the one."""
    ids = running(emulator, 5)
    garbled = Fault.answer(200, "not gzip at all", headers={"content-encoding": "gzip"})
    emulator.add_fault(garbled, method="POST", path=f"/v1/batches/{ids[2]}/cancel")
    result = run_dag("stop_batches_ids", batch_ids=ids)
    assert result.state == "failed"
    assert sorted(cancels(emulator)) == sorted(ids)
    logs = captured_logs()
    assert "1 of 5 batches failed" in logs
    assert f"batch {ids[2]!r}: found in_progress, failed: The answer of" in logs
    assert "could not be read: its body does not match its Content-Encoding" in logs
    assert all(
        f"batch {batch_id!r}: found in_progress, cancel requested" in logs for batch_id in ids if batch_id != ids[2]
    )
    assert "DecodingError" not in logs


def test_a_look_whose_own_get_failed_is_not_sent_again(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """Only a lost list page falls back to a GET: a batch's own GET that failed (no retry configured) fails it."""
    ids = running(emulator, 1)  # one batch: its own GET, no page
    emulator.add_fault(Fault.server_error(503), method="GET", path="/v1/batches/*")
    result = run_dag("stop_batches_ids", batch_ids=ids)
    assert result.state == "failed"
    assert [entry.status for entry in emulator.requests(method="GET", path="/v1/batches/*")] == [503]
    assert cancels(emulator) == []
    assert "1 of 1 batch failed" in captured_logs()


def test_a_list_rendered_as_text_without_tojson_is_read_back(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    ids = running(emulator, 2)
    result = run_dag("stop_batches_text", batch_ids=ids)  # "['batch_...', 'batch_...']", Python's text
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(ids)


def test_batch_objects_select_by_their_id(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    batches = [emulator.create_batch() for _ in range(2)]
    result = run_dag("stop_batches_objects", batches=batches)
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(str(batch["id"]) for batch in batches)


def test_metadata_selects_only_matching_batches(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    mine = running(emulator, 3, metadata={"airflow_run_id": "run-a", "team": "search"})
    running(emulator, 2, metadata={"airflow_run_id": "run-b", "team": "search"})
    running(emulator, 2)
    result = run_dag("stop_batches_metadata", metadata={"airflow_run_id": "run-a"})
    assert result.state == "success"
    assert sorted(cancels(emulator)) == sorted(mine)


def test_metadata_whose_list_cannot_be_read_whole_cancels_what_it_showed_then_fails(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    running(emulator, 150, metadata={"airflow_run_id": "run-b"})
    mine = running(emulator, 3, metadata={"airflow_run_id": "run-a"})  # the newest: on the list's first page
    emulator.add_fault(Fault.server_error(502), method="GET", path="/v1/batches", times=1000, skip=1)
    result = run_dag("stop_batches_metadata", metadata={"airflow_run_id": "run-a"})
    assert result.state == "failed"
    assert sorted(cancels(emulator)) == sorted(mine)
    assert "Sent the cancels of the 3 batches the list showed, but could not read all of it: the batch list " in (
        captured_logs()
    )


def test_empty_selection_is_nothing_to_cancel(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    result = run_dag("stop_batches_ids", batch_ids=[])
    assert result.state == "success"
    assert result.xcom("stop") == []
    assert "Nothing to cancel: the selection holds no batch." in captured_logs()
    assert emulator.requests() == []


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({}, "batch_ids rendered to 'None'"),
        ({"batch_ids": None}, "batch_ids rendered to 'None'"),
        ({"batch_ids": "batch_1"}, "the text 'batch_1' is no list"),
        ({"batch_ids": {"id": "x"}}, "batch_ids must be a list, got dict"),
    ],
)
def test_bad_selection_fails_before_any_request(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], conf: dict[str, Any], message: str
) -> None:
    result = run_dag("stop_batches_text", **conf) if conf else run_dag("stop_batches_text")
    assert result.state == "failed"
    assert message in captured_logs()
    assert emulator.requests() == []


@pytest.mark.parametrize(
    ("dag_id", "conf", "message"),
    [
        ("stop_batches_bad_metadata", {"metadata": []}, "metadata must be a non-empty dict of text keys and values"),
        ("stop_batches_bad_metadata", {"metadata": {"n": 1}}, "metadata must be a non-empty dict of text keys"),
    ],
)
def test_bad_options_fail_before_any_request(
    emulator: OpenAIEmulator,
    run_dag: RunDag,
    captured_logs: Callable[[], str],
    dag_id: str,
    conf: dict[str, Any],
    message: str,
) -> None:
    result = run_dag(dag_id, **conf)
    assert result.state == "failed"
    assert message in captured_logs()
    assert emulator.requests() == []


def test_exactly_one_selector_is_required() -> None:
    with pytest.raises(
        PSOpenAIConfigurationError, match="exactly one of batch_ids, batches, metadata, this_run; got none"
    ):
        StopBatchesOperator(task_id="none")
    with pytest.raises(PSOpenAIConfigurationError, match="got batch_ids, metadata"):
        StopBatchesOperator(task_id="two", batch_ids=[], metadata={"a": "b"})


def test_a_retry_does_not_cancel_a_batch_twice(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """The first try times out while the batches are cancelling; the retry finds them cancelling: its own cancel."""
    # Try 1's deadline is 1 s after its cancels, try 2's 1 s after its looks (try 1 over): try 2's last
    # list page is asked for 2 s or more after the cancels, less one page's latency (milliseconds here),
    # after the batches settle; try 1 keeps almost a second of margin.
    emulator.cancel_delay = 1.95
    ids = running(emulator, 3)
    result = run_dag("stop_batches_retry", batch_ids=ids)
    assert result.state == "success"
    assert result.tries["stop"] == 2
    assert sorted(cancels(emulator)) == sorted(ids)
    assert [batch["status"] for batch in result.xcom("stop")] == ["cancelled"] * 3


def test_a_try_run_again_under_its_number_does_not_cancel_a_batch_twice(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """Airflow 3.3 can run a try again with the same try number (apache/airflow#67287): the batches it finds
    cancelling were cancelled after the DAG run started, by this run."""
    emulator.cancel_delay = 60
    ids = running(emulator, 3)
    result = run_dag("stop_batches_same_try_twice", batch_ids=ids)
    assert result.state == "success"
    assert result.tries["stop"] == 1
    assert sorted(cancels(emulator)) == sorted(ids)
    logs = captured_logs()
    for batch_id in ids:
        assert f"batch {batch_id!r}: found cancelling, no second cancel (its cancel was requested by an earlier" in logs


# -- run tags -------------------------------------------------------------------------------------------------


def test_batches_created_in_a_task_carry_the_run_tags_and_are_found_by_them(
    emulator: OpenAIEmulator, run_dag: RunDag
) -> None:
    others = running(emulator, 2, metadata={"airflow_dag_id": "stop_batches_of_this_run", "airflow_run_id": "other"})
    result = run_dag("stop_batches_of_this_run", count=3)
    assert result.state == "success"
    created = result.xcom("create_tagged")
    for batch_id in created:
        metadata = emulator.get_batch(batch_id)["metadata"]
        assert metadata.pop("airflow_create_nonce")
        assert metadata == {
            "airflow_deployment": "default",
            "airflow_dag_id": "stop_batches_of_this_run",
            "airflow_run_id": result.dag_run.run_id,
            "airflow_task_id": "create_tagged",
            "team": "search",
        }
    assert sorted(cancels(emulator)) == sorted(created)
    assert all(emulator.get_batch(batch_id)["status"] == "in_progress" for batch_id in others)


def test_own_metadata_keys_win_and_the_limits_are_checked_before_the_request() -> None:
    tags = {"airflow_dag_id": "d", "airflow_run_id": "r", "airflow_task_id": "t"}
    assert tagged_metadata(tags, {"airflow_task_id": "mine"})["airflow_task_id"] == "mine"
    with pytest.raises(PSOpenAIConfigurationError, match="at most 16 pairs"):
        tagged_metadata(tags, {f"k{n}": "v" for n in range(14)})
    with pytest.raises(PSOpenAIConfigurationError, match="the API allows 64"):
        tagged_metadata(tags, {"k" * 65: "v"})
    with pytest.raises(PSOpenAIConfigurationError, match="the API allows 512"):
        tagged_metadata(tags, {"k": "v" * 513})


# -- the safety-net callback ----------------------------------------------------------------------------------


def failing_run_context(run_id: str, dag_id: str = "pipeline") -> dict[str, Any]:
    """The part of a failure callback's context the callback reads (a DagRun's identity and run_after)."""
    from datetime import UTC, datetime, timedelta

    return {"dag_run": SimpleNamespace(dag_id=dag_id, run_id=run_id, run_after=datetime.now(UTC) - timedelta(hours=1))}


def test_the_callback_cancels_the_runs_running_batches_only(emulator: OpenAIEmulator) -> None:
    tags = {"airflow_dag_id": "pipeline", "airflow_run_id": "run-1"}
    mine = running(emulator, 3, metadata=tags)
    already = str(emulator.create_batch(status="cancelling", metadata=tags)["id"])
    other_run = running(emulator, 2, metadata={**tags, "airflow_run_id": "run-2"})
    untagged = running(emulator, 2)
    cancel_run_batches(failing_run_context("run-1"))
    assert sorted(cancels(emulator)) == sorted(mine)
    assert already not in cancels(emulator)
    assert all(emulator.get_batch(b)["status"] == "in_progress" for b in [*other_run, *untagged])
    cancel_run_batches(failing_run_context("run-1"))  # idempotent: nothing running is left
    assert len(cancels(emulator)) == 3


def test_the_callback_never_raises_and_is_bounded_in_time(
    emulator: OpenAIEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    running(emulator, 2, metadata={"airflow_dag_id": "pipeline", "airflow_run_id": "run-1"})
    emulator.add_fault(Fault.hang(None), method="GET", path="/v1/batches", times=5)
    started = time.monotonic()
    cancel_run_batches_with(timeout_sec=1.0)(failing_run_context("run-1"))
    assert time.monotonic() - started < 5
    assert (
        "0 batches tagged with it, 0 running: 0 cancels sent, 0 could not be cancelled. Not looked at: the whole"
        in (caplog.text)
    )
    cancel_run_batches_with(conn_id="psopenai_missing")(failing_run_context("run-1"))
    assert "'psopenai_missing' is not defined" in caplog.text


# -- the listener for runs marked failed by hand ------------------------------------------------------------


def run_failed(listener: Any, run_id: str, msg: str = "", *, with_callback: bool = False) -> None:
    """Tell the listener a run failed, as Airflow does, and wait for its cleanup."""
    dag_run = failing_run_context(run_id)["dag_run"]
    dag_run.dag = SimpleNamespace(has_on_failure_callback=with_callback)
    listener.on_dag_run_failed(dag_run=dag_run, msg=msg)
    assert listener.join(30)


def test_the_listener_cancels_a_run_marked_failed_only_when_turned_on(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_psopenai.plugin import PSOpenAIPlugin, failed_run_listener

    assert PSOpenAIPlugin.listeners == [failed_run_listener]
    mine = running(emulator, 2, metadata={"airflow_dag_id": "pipeline", "airflow_run_id": "run-1"})
    run_failed(failed_run_listener, "run-1")
    assert cancels(emulator) == []  # off by default: it would act on every DAG of the deployment
    monkeypatch.setenv("AIRFLOW__PSOPENAI__CANCEL_BATCHES_OF_FAILED_RUNS", "True")
    run_failed(failed_run_listener, "run-1", "Dag Run's state was manually set to `failed`.", with_callback=True)
    assert sorted(cancels(emulator)) == sorted(mine)


def test_the_listener_leaves_scheduler_failures_to_the_dags_own_callback(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_psopenai.plugin import failed_run_listener

    monkeypatch.setenv("AIRFLOW__PSOPENAI__CANCEL_BATCHES_OF_FAILED_RUNS", "True")
    mine = running(emulator, 2, metadata={"airflow_dag_id": "pipeline", "airflow_run_id": "run-1"})
    run_failed(failed_run_listener, "run-1", "task_failure", with_callback=True)
    assert cancels(emulator) == []
    run_failed(failed_run_listener, "run-1", "task_failure", with_callback=False)
    assert sorted(cancels(emulator)) == sorted(mine)
