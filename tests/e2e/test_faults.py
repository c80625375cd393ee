"""Faults around a deferred wait: the triggerer restarts under it, and a user marks the waiting task failed."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.checks import ON_KILL_MESSAGE, assert_no_secret, event_time, log_events
from tests.e2e.stack import wait_until

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RESTART_DAG = "e2e_psopenai_restart"


def waits_deferred(stack: AirflowStack, dag_id: str, run_id: str, tasks: list[str]) -> dict[str, Any] | None:
    """Return the task instances once every one of ``tasks`` is deferred with its trigger assigned to a triggerer."""
    tis = stack.task_instances(dag_id, run_id)
    ready = all(
        tis.get(task, {}).get("state") == "deferred" and (tis[task].get("trigger") or {}).get("triggerer_id")
        for task in tasks
    )
    return tis if ready else None


@dataclass
class RestartCase:
    """The run of ``e2e_psopenai_restart`` and what the test learns about it along the way."""

    stack: AirflowStack
    run_id: str
    batches: dict[str, str]  # task -> batch ID of each deferred wait
    trigger_ids: dict[str, int] = field(default_factory=dict)
    old_triggerer: int = 0
    before: dict[int, dict[str, Any]] = field(default_factory=dict)
    stopped: float = 0.0
    restarted: float = 0.0

    @property
    def short_deadline(self) -> float:
        """Return wait_short's deadline as its trigger row held it before the restart."""
        deadline: float = self.before[self.trigger_ids["wait_short"]]["kwargs"]["deadline"]
        return deadline


def defer_the_waits(stack: AirflowStack) -> RestartCase:
    """Run the DAG until every wait is deferred, assigned to the triggerer and polled by it."""
    conf = {key: stack.create_batch()["id"] for key in ("long_batch_id", "short_batch_id", "sensed_batch_id")}
    batches = {"wait_long": conf["long_batch_id"], "wait_short": conf["short_batch_id"]}
    batches["sensor_long"] = conf["sensed_batch_id"]
    case = RestartCase(stack, stack.trigger(RESTART_DAG, conf), batches)
    tis = wait_until(lambda: waits_deferred(stack, RESTART_DAG, case.run_id, list(batches)), 180, "the deferrals")
    (case.old_triggerer,) = {tis[task]["trigger"]["triggerer_id"] for task in batches}
    case.trigger_ids = {task: tis[task]["trigger"]["id"] for task in batches}
    seen_deferred = time.time()
    for batch_id in batches.values():
        wait_until(lambda b=batch_id: any(t > seen_deferred for t in stack.batch_polls(b)), 30, f"polls of {batch_id}")
    return case


def stop_the_triggerer_past_the_short_deadline(case: RestartCase) -> None:
    """SIGTERM the triggerer; keep it down until just before wait_short's deadline; nothing polls meanwhile.

    The trigger rows are read while it is down: the kwargs as the deferral wrote them, before any restart.
    """
    stack = case.stack
    code, case.stopped = stack.stop_triggerer()
    log = stack.processes["triggerer"].log_tail()
    assert code == 0, log
    assert "Exiting gracefully upon receiving signal 15" in log
    case.before = {row["id"]: row for row in stack.triggers()}
    assert set(case.trigger_ids.values()) == set(case.before)
    assert {row["triggerer_id"] for row in case.before.values()} == {case.old_triggerer}
    assert_no_secret(list(case.before.values()))
    # The deadline is absolute, set when the task deferred: 60 s for wait_short, 150 s for wait_long (60 s leave
    # room for three deferrals and their first polls on a loaded machine before the triggerer is stopped).
    long_deadline = case.before[case.trigger_ids["wait_long"]]["kwargs"]["deadline"]
    assert long_deadline - case.short_deadline == pytest.approx(90, abs=15)
    assert case.stopped < case.short_deadline, "the triggerer was stopped after wait_short's deadline: too slow"
    # Down for at least 8 s and until 8 s before wait_short's deadline, which then passes while the
    # triggerer is down or just after the new one is up.
    while time.time() < max(case.stopped + 8, case.short_deadline - 8):
        time.sleep(0.2)
    case.restarted = time.time()
    tis = stack.task_instances(RESTART_DAG, case.run_id)
    for task, batch_id in case.batches.items():
        late = [t for t in stack.batch_polls(batch_id) if t > case.stopped + 0.5]
        assert not late, f"{task}: {batch_id} polled while the triggerer was down: {late}"
        assert tis[task]["state"] == "deferred"


def trigger_log_jobs(case: RestartCase, task: str) -> set[int]:
    """Return the IDs of the triggerers that wrote a trigger log for ``task`` in this run."""
    files = case.stack.task_log_files(RESTART_DAG, case.run_id, task)
    return {int(match[1]) for path in files if (match := re.search(r"\.trigger\.(\d+)\.log$", path.name))}


def restart_the_triggerer(case: RestartCase) -> int:
    """Start a new triggerer; once it runs the long waits, their kwargs (deadline included) are unchanged.

    Each long wait's row is read as soon as the new triggerer holds it. The row goes when the trigger
    fires, once its cancel has settled, which on a loaded machine can come before a read sees the
    take-over: a wait whose row is gone was run by the triggerer whose trigger log it has.
    """
    stack = case.stack
    stack.start_triggerer()
    runners: dict[str, int] = {}  # long wait -> the new triggerer that ran it

    def taken_over() -> set[int] | None:
        rows = {row["id"]: row for row in stack.triggers()}
        for task in ("wait_long", "sensor_long"):
            if task in runners:
                continue
            row = rows.get(case.trigger_ids[task])
            if row is None:
                new_jobs = trigger_log_jobs(case, task) - {case.old_triggerer}
                if new_jobs:
                    (runners[task],) = new_jobs
            elif row["triggerer_id"] not in (None, case.old_triggerer):
                assert row["kwargs"] == case.before[case.trigger_ids[task]]["kwargs"], task
                assert_no_secret([row])
                runners[task] = row["triggerer_id"]
        return set(runners.values()) if len(runners) == 2 else None

    (new_triggerer,) = wait_until(taken_over, 180, "the new triggerer to take the waits over")
    return int(new_triggerer)


def assert_short_wait_timed_out_at_its_deadline(case: RestartCase, new_triggerer: int) -> None:
    """wait_short failed on the timeout its restarted trigger fired at the original deadline."""
    stack = case.stack
    worker_log = stack.task_log(RESTART_DAG, case.run_id, "wait_short", trigger=False)
    assert "PSOpenAIWaitTimeoutError" in worker_log
    assert "did not settle before its wait_timeout of 60 s" in worker_log
    # The new triggerer ran the trigger again and fired the timeout at the original deadline (at once
    # when that had passed before it started the trigger), not 60 s after the restart.
    new_trigger_log = next(
        path.read_text()
        for path in stack.task_log_files(RESTART_DAG, case.run_id, "wait_short")
        if path.name.endswith(f".trigger.{new_triggerer}.log")
    )
    events = log_events(new_trigger_log)
    started = event_time(events, "starting")
    fired = event_time(events, "Trigger fired event")
    fired_event = next(str(e.get("result")) for e in events if e.get("event") == "Trigger fired event")
    assert "'status': 'timeout'" in fired_event
    deadline = case.short_deadline
    assert fired >= deadline - 0.5, (fired, deadline)
    assert fired - max(started, deadline) < 5, (started, fired, deadline)
    assert fired < case.restarted + 60 - 5
    # Nobody polled the batch after the deadline, and it really was still cancelling then. The new
    # triggerer is started 8 s before the deadline; if it is slower than that to get the trigger to its
    # first look, the trigger is past its deadline and looks once (by design, to report a batch settled
    # meanwhile): then that one look is its only one.
    polls = stack.batch_polls(case.batches["wait_short"])
    after_restart = [t for t in polls if t > case.restarted]
    late = [t for t in polls if t >= deadline + 1]
    assert not late or after_restart == late == late[:1], (started, deadline, after_restart)
    history = stack.batch(case.batches["wait_short"])["history"]
    assert history[-1][1] == "cancelled"
    assert history[-1][0] > deadline


def test_triggerer_restart_resumes_waits_and_keeps_their_absolute_deadline(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    # Cancels settle 80 s after they are sent: long after wait_short's 60 s deadline and the restart.
    stack.emulator_settings(cancel_delay=80)
    case = defer_the_waits(stack)
    stop_the_triggerer_past_the_short_deadline(case)
    new_triggerer = restart_the_triggerer(case)

    result = stack.wait_run(RESTART_DAG, case.run_id, timeout=240)
    assert result.states == {
        "wait_long": "success",
        "sensor_long": "success",
        "cancel_sensed": "success",
        "wait_short": "failed",
    }
    for batch_id in case.batches.values():
        assert len(stack.batch_cancels(batch_id)) == 1, f"{batch_id} not cancelled exactly once"
    # The long waits resumed in the new triggerer and ended on the cancelled batch.
    for task in ("wait_long", "sensor_long"):
        assert stack.batch(case.batches[task])["status"] == "cancelled"
        assert any(t > case.restarted for t in stack.batch_polls(case.batches[task])), f"{task}: no poll after restart"
        assert "is cancelled" in stack.task_log(RESTART_DAG, case.run_id, task, trigger=True)
    assert stack.xcom(RESTART_DAG, case.run_id, "wait_long")["status"] == "cancelled"
    assert stack.xcom(RESTART_DAG, case.run_id, "sensor_long")["status"] == "cancelled"
    assert_short_wait_timed_out_at_its_deadline(case, new_triggerer)


def test_marking_a_deferred_wait_failed_stops_its_trigger_without_a_second_cancel(
    airflow_stack: AirflowStack,
) -> None:
    stack = airflow_stack
    dag_id = "e2e_psopenai_mark_failed"
    # The batch stays cancelling for the whole test.
    stack.emulator_settings(cancel_delay=600)
    batch_id = stack.create_batch()["id"]
    run_id = stack.trigger(dag_id, {"batch_id": batch_id})

    tis = wait_until(lambda: waits_deferred(stack, dag_id, run_id, ["stop_and_wait"]), 180, "the wait to defer")
    trigger_id = tis["stop_and_wait"]["trigger"]["id"]
    seen_deferred = time.time()

    def polled_twice() -> bool:
        return len([t for t in stack.batch_polls(batch_id) if t > seen_deferred]) >= 2

    wait_until(polled_twice, 30, "two of the trigger's polls")

    # A user marks the waiting task failed (the UI's "Mark as failed": the REST API's PATCH new_state).
    marked = time.time()
    stack.set_task_state(dag_id, run_id, "stop_and_wait", "failed")

    # The task is failed at once, the run fails, and the trigger row goes.
    result = stack.wait_run(dag_id, run_id, timeout=120)
    assert result.state == "failed"
    assert result.states == {"stop_and_wait": "failed"}
    wait_until(lambda: stack.task_instances(dag_id, run_id)["stop_and_wait"].get("trigger") is None, 60, "unlink")
    assert trigger_id not in {row["id"] for row in stack.triggers()}

    # The triggerer cancels the running trigger as a user action and calls its on_kill (Airflow 3.3+).
    def trigger_log() -> str | None:
        text = stack.task_log(dag_id, run_id, "stop_and_wait", trigger=True)
        return text if "trigger completed" in text else None

    events = log_events(wait_until(trigger_log, 60, "the trigger to complete"))
    user_cancel = event_time(events, "Trigger cancelled by user action, invoking on_kill")
    on_kill = event_time(events, ON_KILL_MESSAGE)
    completed = event_time(events, "trigger completed")
    assert marked < user_cancel <= on_kill <= completed
    assert f"Wait for batch '{batch_id}' {ON_KILL_MESSAGE}" in {e["event"] for e in events}
    assert "Trigger fired event" not in {e["event"] for e in events}

    # No second cancel, and the polling stopped with the trigger: nothing in the 5 s after it completed
    # (it polled every second before).
    while time.time() < completed + 5:
        time.sleep(0.2)
    polls = stack.batch_polls(batch_id)
    assert len(stack.batch_cancels(batch_id)) == 1
    assert [t for t in polls if t > completed + 0.5] == [], (completed, polls)
    assert len([t for t in polls if seen_deferred < t < marked]) >= 2
    assert stack.batch(batch_id)["status"] == "cancelling"
    # The failed task's worker log has no execute_complete: it never resumed.
    assert "Task failed with exception" not in stack.task_log(dag_id, run_id, "stop_and_wait", trigger=False)
