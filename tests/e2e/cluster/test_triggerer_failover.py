"""Two triggerers: one frozen has its waits moved to the other, then that one is killed under them.

One run of ``cluster_psopenai_failover`` (long waits and one whose 75 s deadline passes late in the
test) goes through both ways a trigger changes triggerer:

1. Triggerer A, which holds ``wait_short``, is frozen (SIGSTOP) past the health-check threshold: B
   takes its waits over. A is let go on (SIGCONT), finds the waits are no longer its own and
   cancels them, calling each trigger's ``on_kill`` (Airflow 3.3 does on such a move,
   apache/airflow#73454): the provider's ``on_kill`` must only log, and send nothing.
2. B, now holding every wait, is killed with SIGKILL (its whole process group): A takes them back.

Every wait still ends, with no second cancel, ``wait_short`` at its original absolute deadline, and
no trigger row ever holds the key.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.checks import ON_KILL_MESSAGE, assert_no_secret, log_events
from tests.e2e.cluster.cluster_stack import TRIGGERER_HEALTH_CHECK_THRESHOLD_SEC
from tests.e2e.stack import wait_until

if TYPE_CHECKING:
    from tests.e2e.cluster.cluster_stack import ClusterStack

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

DAG_ID = "cluster_psopenai_failover"
LONG_WAITS = 6
# The long waits settle after both moves (about 45 s after they deferred); wait_short's 75 s pass first.
CANCEL_DELAY_SEC = 90
# From a triggerer's last heartbeat to the other running its triggers: the threshold, then the next
# loop of the other (1 s) and the trigger's start.
TAKEOVER_BOUND_SEC = TRIGGERER_HEALTH_CHECK_THRESHOLD_SEC + 20
USER_ACTION_CANCEL = "Trigger cancelled by user action, invoking on_kill"


@dataclass
class Failover:
    """The run, its batches (task key -> batch ID) and the triggerers' job IDs."""

    stack: ClusterStack
    run_id: str
    batches: dict[str, str]
    first: int = 0  # triggerer A's job: it holds wait_short at the start
    second: int = 0  # triggerer B's job

    def trigger_rows(self) -> dict[int, dict[str, Any]]:
        """Return the trigger rows of this run's waits, by trigger ID."""
        ours = set(self.batches.values())
        return {row["id"]: row for row in self.stack.triggers() if row["kwargs"]["ids"]["batch_id"] in ours}

    def holders(self) -> dict[str, int | None]:
        """Return which triggerer job holds each wait now."""
        return self.stack.triggerer_of_tasks(DAG_ID, self.run_id)

    def held_by(self, job_id: int) -> set[str]:
        """Return the waits job ``job_id`` holds now."""
        return {task for task, holder in self.holders().items() if holder == job_id}

    def wait_all_run_by(self, job_id: int, moved: set[str], since: float, what: str) -> None:
        """Wait until ``job_id`` holds every wait, and has started the ``moved`` ones after ``since``.

        Its own trigger log says so (batch polls are shared list pages, which name no triggerer).
        """

        def started(task: str) -> bool:
            events = trigger_events(self, task, job_id)
            return any("starting" in str(e.get("event")) and at(e) > since for e in events)

        wait_until(
            lambda: self.held_by(job_id) == set(self.batches) and all(started(task) for task in moved),
            TAKEOVER_BOUND_SEC,
            lambda: f"{what}: held {self.holders()}",
        )


def defer_the_waits(stack: ClusterStack) -> Failover:
    """Run the DAG until every wait is deferred, held by a triggerer and polled."""
    long_ids = [str(stack.create_batch()["id"]) for _ in range(LONG_WAITS)]
    short_id = str(stack.create_batch()["id"])
    run_id = stack.trigger(DAG_ID, {"long_batch_ids": long_ids, "short_batch_id": short_id})
    batches = {f"wait_long[{index}]": batch_id for index, batch_id in enumerate(long_ids)}
    batches["wait_short"] = short_id
    case = Failover(stack, run_id, batches)

    def all_held() -> dict[str, int | None] | None:
        held = case.holders()
        return held if set(held) == set(batches) and None not in held.values() else None

    held = wait_until(all_held, 180, "every wait to be deferred and held by a triggerer")
    case.first = int(held["wait_short"] or 0)
    (case.second,) = stack.running_triggerer_jobs() - {case.first}
    for task, job_id in held.items():
        wait_until(
            lambda t=task, j=job_id: any("starting" in str(e.get("event")) for e in trigger_events(case, t, j)),
            30,
            f"the trigger of {task} to start",
        )
    return case


def trigger_events(case: Failover, task_key: str, job_id: int) -> list[dict[str, Any]]:
    """Return the log events triggerer job ``job_id`` wrote for a wait."""
    task_id, _, index = task_key.partition("[")
    folder = case.stack.logs / f"dag_id={DAG_ID}" / f"run_id={case.run_id}" / f"task_id={task_id}"
    if index:
        folder /= f"map_index={index.rstrip(']')}"
    paths = sorted(folder.glob(f"attempt=1.log.trigger.{job_id}.log"))
    return log_events("\n".join(path.read_text() for path in paths))


def at(event: dict[str, Any]) -> float:
    """Return when a log event was written (epoch seconds)."""
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def test_waits_survive_a_frozen_triggerer_and_a_killed_one(cluster: ClusterStack) -> None:
    stack = cluster
    stack.emulator_settings(cancel_delay=CANCEL_DELAY_SEC)
    case = defer_the_waits(stack)
    rows = case.trigger_rows()
    assert len(rows) == len(case.batches)
    assert_no_secret(list(rows.values()))
    short_trigger = next(
        row for row in rows.values() if row["kwargs"]["ids"] == {"batch_id": case.batches["wait_short"]}
    )
    deadline = float(short_trigger["kwargs"]["deadline"])
    moved_first = case.held_by(case.first)
    first = stack.triggerer_process(case.first)
    second = stack.triggerer_process(case.second)

    # 1. A frozen: B takes its waits over; A, let go on, drops them, each through on_kill.
    frozen = time.time()
    first.signal_all(signal.SIGSTOP)
    try:
        case.wait_all_run_by(case.second, moved_first, frozen, "the other triggerer to take the frozen one's waits")
    finally:
        first.signal_all(signal.SIGCONT)
    resumed = time.time()

    def dropped_by_first() -> bool:
        return all(
            any(
                ON_KILL_MESSAGE in str(e.get("event")) and at(e) > resumed
                for e in trigger_events(case, task, case.first)
            )
            for task in moved_first
        )

    wait_until(dropped_by_first, 60, "the resumed triggerer to drop the waits it lost")
    for task in moved_first:
        events = trigger_events(case, task, case.first)
        messages = [str(e.get("event")) for e in events if at(e) > resumed]
        assert USER_ACTION_CANCEL in messages, (task, messages)
        assert "Trigger fired event" not in messages, (task, messages)
    for batch_id in case.batches.values():
        assert len(stack.batch_cancels(batch_id)) == 1, f"{batch_id}: a cancel after on_kill"

    # 2. B killed with SIGKILL while it holds every wait: A takes them all back.
    assert time.time() < deadline - TAKEOVER_BOUND_SEC / 2, "too slow: wait_short's deadline is too near"
    killed = second.kill()
    case.wait_all_run_by(
        case.first, set(case.batches), killed, "the surviving triggerer to take the killed one's waits"
    )
    after = case.trigger_rows()
    assert {row_id: row["kwargs"] for row_id, row in after.items()} == {r: row["kwargs"] for r, row in rows.items()}
    assert_no_secret(list(after.values()))
    # A replacement, so that the next tests have two triggerers again; it starts after the takeover.
    stack.start_triggerer(second.name)

    result = stack.wait_run(DAG_ID, case.run_id, timeout=CANCEL_DELAY_SEC + 120)
    assert result.states == {
        **{task: "success" for task in case.batches if task != "wait_short"},
        "wait_short": "failed",
        "long_ids": "success",
    }
    for task, batch_id in case.batches.items():
        assert len(stack.batch_cancels(batch_id)) == 1, f"{task}: {batch_id} not cancelled exactly once"
        if task != "wait_short":
            index = int(task.removeprefix("wait_long[").removesuffix("]"))
            assert stack.xcom(DAG_ID, case.run_id, "wait_long", map_index=index)["status"] == "cancelled"

    # wait_short timed out in A, at the deadline set when it deferred, though its trigger changed
    # triggerer twice (not 75 s after the last start).
    events = trigger_events(case, "wait_short", case.first)
    fired = next(e for e in events if e.get("event") == "Trigger fired event")
    assert "'status': 'timeout'" in str(fired.get("result"))
    restarted = max(at(e) for e in events if "starting" in str(e.get("event")) and at(e) < at(fired))
    assert restarted > killed
    assert deadline - 0.5 <= at(fired) < max(restarted, deadline) + 5, (restarted, at(fired), deadline)
    short_log = stack.task_log(DAG_ID, case.run_id, "wait_short", trigger=False)
    assert "did not settle before its wait_timeout of 75 s" in short_log
    assert stack.batch(case.batches["wait_short"])["history"][-1][0] > deadline  # it was still cancelling then
    wait_until(lambda: len(stack.live_triggerers()) == 2, 120, "the replacement triggerer to heartbeat")
