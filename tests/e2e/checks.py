"""What several end-to-end suites check the same way: log events, trigger rows, a run's batches cleaned up."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tests.e2e.stack import EMULATOR_KEY, wait_until

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

TRIGGER_CLASSPATH = "airflow_psopenai.triggers.status.ResourceStatusTrigger"
TRIGGER_KWARGS = {
    "resource",
    "ids",
    "conn_id",
    "hook_kwargs",
    "poll_interval",
    "deadline",
    "try_number",
    "wait_started",
    "deadline_name",
}
ON_KILL_MESSAGE = (
    "stopped here (task marked failed or cleared, or the wait moved to another triggerer); "
    "the cancel was already requested, nothing more to do."
)


def log_events(text: str) -> list[dict[str, Any]]:
    """Return the JSON lines of a task or trigger log."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def event_time(events: list[dict[str, Any]], contains: str) -> float:
    """Return when the first log event whose message contains ``contains`` was written (epoch seconds)."""
    for event in events:
        if contains in str(event.get("event", "")):
            return datetime.fromisoformat(event["timestamp"]).timestamp()
    raise AssertionError(f"no log event containing {contains!r} in {[e.get('event') for e in events]}")


def assert_no_secret(rows: list[dict[str, Any]]) -> None:
    """The trigger rows hold only plain, secret-free kwargs."""
    for row in rows:
        assert row["classpath"] == TRIGGER_CLASSPATH
        assert set(row["kwargs"]) == TRIGGER_KWARGS, row["kwargs"]
        assert row["kwargs"]["conn_id"] in {"psopenai_default", "psopenai_per_batch"}  # a name, never a secret
        assert EMULATOR_KEY not in json.dumps(row), row


# From the run's failure to every batch of it cancelling: the DAG processor runs the callback on its
# next loop (a few seconds); listing and cancelling three batches takes well under a second.
CLEANUP_BOUND_SEC = 60


def bystanders(stack: AirflowStack, dag_id: str) -> list[str]:
    """Create batches the cleanup must not touch: another run's, and an untagged one."""
    other_run = stack.create_batch(metadata={"airflow_dag_id": dag_id, "airflow_run_id": "another-run"})
    return [str(other_run["id"]), str(stack.create_batch()["id"])]


def assert_cleaned_up(stack: AirflowStack, dag_id: str, run_id: str, untouched: list[str], since: float) -> float:
    """Wait until every batch of the run is cancelling or cancelled; check one cancel each, the others alone."""
    batch_ids: list[str] = stack.xcom(dag_id, run_id, "create_tagged")
    assert len(batch_ids) == 3

    def all_cancelled() -> bool:
        return all(stack.batch(batch_id)["status"] in ("cancelling", "cancelled") for batch_id in batch_ids)

    wait_until(all_cancelled, CLEANUP_BOUND_SEC, f"the batches of {run_id} to be cancelled")
    took = time.time() - since
    time.sleep(3)  # a second cleanup racing the first would show within seconds
    for batch_id in batch_ids:
        assert len([e for e in stack.batch_cancels(batch_id) if e["status"]]) == 1, batch_id
    for batch_id in untouched:
        assert stack.batch_cancels(batch_id) == [], batch_id
        assert stack.batch(batch_id)["status"] == "in_progress", batch_id
    return took


def check_cleanup_after_a_last_try_failed(stack: AirflowStack) -> None:
    """Run ``e2e_psopenai_cleanup_last_try`` (its DAG failure callback cancels) and check the cleanup."""
    dag_id = "e2e_psopenai_cleanup_last_try"
    untouched = bystanders(stack, dag_id)
    run_id = stack.trigger(dag_id)
    result = stack.wait_run(dag_id, run_id, timeout=240)
    assert result.state == "failed"
    assert result.states == {"create_tagged": "success", "fail_every_try": "failed"}
    assert assert_cleaned_up(stack, dag_id, run_id, untouched, time.time()) < CLEANUP_BOUND_SEC


def check_cleanup_after_the_run_is_marked_failed(stack: AirflowStack) -> None:
    """Run ``e2e_psopenai_cleanup_marked``, mark it failed through the REST API (the listener cancels), check."""
    dag_id = "e2e_psopenai_cleanup_marked"
    untouched = bystanders(stack, dag_id)
    run_id = stack.trigger(dag_id)

    def working() -> dict[str, Any] | None:
        tis = stack.task_instances(dag_id, run_id)
        return tis if tis.get("work_for_long", {}).get("state") == "running" else None

    wait_until(working, 180, "work_for_long to run")
    marked = time.time()
    stack.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})
    assert assert_cleaned_up(stack, dag_id, run_id, untouched, marked) < CLEANUP_BOUND_SEC
