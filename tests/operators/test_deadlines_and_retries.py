"""The edges of a cancel and its wait, in real DAG runs: bounded waits, lost answers, Airflow retries."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.testing import Fault
from airflow_psopenai.waiting import waits

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

# A wait ends at its deadline plus at most about a second (the poll made at the deadline): 3 s leaves
# room for a loaded machine, and is still far from what an unbounded wait takes (the hook's retries
# alone are 1 + 2 + 4 + 8 s, a hang 60 s).
DEADLINE_SLACK_SEC = 3.0


def cancels(emulator: OpenAIEmulator) -> list[int | None]:
    return [entry.status for entry in emulator.requests(method="POST", path="*/cancel")]


def fault_on_polls(emulator: OpenAIEmulator, fault: Fault, times: int = 1) -> None:
    """Inject ``fault`` into the GETs after the status check that comes before the cancel."""
    emulator.add_fault(Fault.latency(0), method="GET")  # the status check goes through as is
    emulator.add_fault(fault, method="GET", times=times)


@pytest.fixture
def wait_ends(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record when each call run in the worker returns or raises (dag.test() runs the task in this process).

    The wait's own end, not the task's: after a failure Airflow's handling of the task takes seconds
    more on a loaded machine, and that is not what the deadline bounds.
    """
    ends: list[float] = []
    run_in_worker = waits.run_in_worker

    def recorded(*args: Any, **kwargs: Any) -> Any:
        try:
            return run_in_worker(*args, **kwargs)
        finally:
            ends.append(time.time())

    monkeypatch.setattr(waits, "run_in_worker", recorded)
    return ends


@pytest.mark.parametrize(
    ("fault", "times"),
    [(Fault.hang(), 1), (Fault.server_error(503), 4)],
    ids=["a poll hangs", "four 503s retried by the hook"],
)
def test_the_worker_wait_ends_at_its_deadline_whatever_a_poll_does(
    emulator: OpenAIEmulator,
    run_dag: RunDag,
    captured_logs: Callable[[], str],
    wait_ends: list[float],
    fault: Fault,
    times: int,
) -> None:
    """wait_timeout=1 and max_retry_count=4: the hook's retries (1 + 2 + 4 + 8 s) must not outlast the wait."""
    emulator.cancel_delay = 60
    batch = emulator.create_batch()
    fault_on_polls(emulator, fault, times)
    result = run_dag("stop_batch_wait_bounded", batch_id=batch["id"])
    assert result.task_states["stop"] == "failed"
    assert "did not settle before its wait_timeout of 1 s" in captured_logs()
    cancel_at = emulator.requests(method="POST")[0].time
    assert len(wait_ends) == 2  # the cancel's call, then the wait's
    assert wait_ends[-1] - cancel_at < 1 + DEADLINE_SLACK_SEC


@pytest.mark.parametrize(
    ("dag_id", "message"),
    [
        ("stop_batch_wait_timeout_sec", "did not settle before its timeout_sec of 1 s (last status: cancelling)"),
        (
            "stop_batch_wait_timeout_sec_deferrable",
            "did not settle before its timeout_sec of 1 s (last status: cancelling)",
        ),
    ],
)
def test_timeout_sec_is_the_deadline_of_a_wait_without_wait_timeout(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str], dag_id: str, message: str
) -> None:
    """PSOpenAI's Stop-Batch -Wait -TimeoutSec 1 waits one second in all, not one second per request."""
    emulator.cancel_delay = 60
    batch = emulator.create_batch()
    result = run_dag(dag_id, batch_id=batch["id"])
    assert result.task_states["stop"] == "failed"
    assert message in captured_logs()
    last_poll = emulator.requests(method="GET")[-1].time
    assert 1 <= last_poll - emulator.requests(method="POST")[0].time < 1 + DEADLINE_SLACK_SEC


@pytest.mark.parametrize(
    "fault",
    [Fault.drop(applied=True), Fault.server_error(502, html=True, applied=True), Fault.hang(3, applied=True)],
    ids=["dropped", "gateway 502", "read timeout"],
)
def test_a_retried_cancel_whose_first_answer_was_lost_succeeds(
    emulator: OpenAIEmulator, run_dag: RunDag, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    """The run's first cancel went through, its answer was lost: the hook's retry looks before it sends again.

    Sent again, the cancel would meet the API's 400 "Cannot cancel run with status 'cancelling'".
    """
    from tests.conftest import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(emulator, timeout_sec=1))
    emulator.cancel_delay = 60
    run = emulator.create_thread_run()
    emulator.add_fault(fault, method="POST")
    result = run_dag("stop_run_retries", thread_id=run["thread_id"], run_id=run["id"])
    assert result.task_states["stop"] == "success"
    assert result.xcom("stop")["status"] == "cancelling"
    (cancel,) = emulator.requests(method="POST")  # one cancel, and it went through
    assert cancel.applied
    assert emulator.get_thread_run(str(run["thread_id"]), str(run["id"]))["status"] == "cancelling"


@pytest.mark.parametrize(
    "dag_id", ["stop_batch_task_retry", "stop_batch_task_retry_deferrable", "stop_batch_task_retry_force"]
)
def test_an_airflow_retry_takes_its_earlier_cancel_as_done(
    emulator: OpenAIEmulator, run_dag: RunDag, dag_id: str
) -> None:
    """Try 1 cancels, then its wait times out (1 s); try 2 finds the batch cancelling and waits, sending nothing."""
    # Try 1's deadline is 1 s after its cancel, try 2's 1 s after try 1 ended: try 2's last look comes
    # 2 s or more after the cancel, always after the batch settles; try 1 keeps almost a second of margin.
    emulator.cancel_delay = 1.95
    batch = emulator.create_batch()
    result = run_dag(dag_id, batch_id=batch["id"])
    assert result.task_states["stop"] == "success"
    assert result.tries["stop"] == 2
    assert result.xcom("stop")["status"] == "cancelled"
    assert cancels(emulator) == [200]


def test_a_try_run_again_under_its_number_takes_its_own_cancel_as_done(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """Airflow 3.3 can run a try again with the same try number (apache/airflow#67287): the batch it finds
    cancelling was cancelled after the DAG run started, so it is this run's cancel, not a reason to fail."""
    emulator.cancel_delay = 60
    batch = emulator.create_batch()
    result = run_dag("stop_batch_same_try_twice", batch_id=batch["id"])
    assert result.task_states["stop"] == "success"
    assert result.tries["stop"] == 1
    assert result.xcom("stop")["status"] == "cancelling"
    assert cancels(emulator) == [200]
    assert "is already cancelling: its cancel was requested by an earlier try or since this DAG run started" in (
        captured_logs()
    )


def test_a_forced_try_run_again_takes_the_apis_refusal_of_its_own_cancel_as_done(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    """force sends without looking; run again under its number, the API refuses ("Cannot cancel run with status
    'cancelled'"): the run was cancelled after the DAG run started, so the refusal is of this task's own cancel."""
    emulator.cancel_delay = 0.3
    run = emulator.create_thread_run()
    result = run_dag("stop_run_forced_same_try_twice", thread_id=run["thread_id"], run_id=run["id"])
    assert result.task_states["stop"] == "success"
    assert result.xcom("stop")["status"] == "cancelled"
    assert cancels(emulator) == [200, 400]
    assert "is already cancelled: its cancel was requested by an earlier try or since this DAG run started" in (
        captured_logs()
    )


def test_the_first_try_keeps_psopenai_rule_for_a_cancelling_batch(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    emulator.cancel_delay = 60
    batch = emulator.create_batch(status="cancelling")
    result = run_dag("stop_batch", batch_id=batch["id"])
    assert result.task_states["stop"] == "failed"
    assert 'Cannot cancel batch with status "cancelling"' in captured_logs()
    assert cancels(emulator) == []


def test_a_task_failing_before_its_console_link_shows_its_own_error_alone(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    result = run_dag("stop_batch_text_input")  # batch_id renders to "None"
    assert result.task_states["stop"] == "failed"
    logs = captured_logs()
    assert "batch_id rendered to the string 'None'" in logs
    assert "XCom not found" not in logs
