"""The Celery worker killed (SIGKILL, every process it started) while a task waits in it, after its cancel.

Airflow finds the task without a heartbeat, puts it up for retry, and a new worker runs the retry,
which finds the batch cancelling: it sends no second cancel and ends with the settled batch.

What is made deterministic, and why:

- The worker dies after the cancel's answer reached the task (its log says so): a kill between the
  cancel request and its answer would be the "lost answer" case, which tests/hooks covers.
- Its task processes die with it: Airflow moves each to a process group of its own, so a group
  kill alone would leave the first try polling on, unsupervised, beside the retry.
- The Celery message of the killed try is unacknowledged (acks_late); Redis would hand it to the new
  worker after the visibility timeout, and the first try would start again beside the retry (a
  known race of dead Celery workers, apache/airflow#67287 among others). The timeout is Airflow's
  six hours, stated in cluster_stack.py, so it never passes here; only the scheduler's retry runs.
- The new worker starts right after the kill, before the retry is queued: it is the only consumer
  when the retry's message comes, whatever the timing of the heartbeat-timeout detection.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cluster.cluster_stack import TASK_HEARTBEAT_TIMEOUT_SEC
from tests.e2e.stack import wait_until

if TYPE_CHECKING:
    from tests.e2e.cluster.cluster_stack import ClusterStack

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

DAG_ID = "cluster_psopenai_worker_kill"
# The batch stays cancelling for the whole outage and the retry's start.
CANCEL_DELAY_SEC = 60
# From the kill to the run's end: the heartbeat timeout, its detection (2 s), the failure callback in
# the DAG processor, the 1 s retry delay, the retry on the new worker, and what is left of the cancel
# delay (the retry ends when the batch settles).
RECOVERY_BOUND_SEC = TASK_HEARTBEAT_TIMEOUT_SEC + CANCEL_DELAY_SEC + 90


def test_a_killed_worker_s_wait_is_retried_on_a_new_worker_without_a_second_cancel(cluster: ClusterStack) -> None:
    stack = cluster
    stack.emulator_settings(cancel_delay=CANCEL_DELAY_SEC)
    batch_id = str(stack.create_batch()["id"])
    run_id = stack.trigger(DAG_ID, {"batch_id": batch_id})

    def waiting_in_the_worker() -> bool:
        log = stack.task_log(DAG_ID, run_id, "stop_and_wait", trigger=False)
        ti = stack.task_instances(DAG_ID, run_id).get("stop_and_wait", {})
        return ti.get("state") == "running" and "Cancel requested for batch" in log

    wait_until(waiting_in_the_worker, 180, "the task to cancel and wait in the worker")
    assert len(stack.batch_cancels(batch_id)) == 1
    old_worker = stack.processes["worker"]
    killed = old_worker.kill()
    new_worker = stack.start_worker()
    wait_until(stack.worker_ready, 120, lambda: f"the new worker to be ready\n{new_worker.log_tail()}")

    result = stack.wait_run(DAG_ID, run_id, timeout=RECOVERY_BOUND_SEC)
    assert time.time() - killed < RECOVERY_BOUND_SEC
    assert result.state == "success", result.states
    ti = result.task_instances["stop_and_wait"]
    assert ti["try_number"] == 2, ti
    assert "up_for_retry" in result.seen("stop_and_wait"), result.samples["stop_and_wait"]
    # The scheduler, not a worker, failed the first try: it had no heartbeat.
    assert "Detected a task instance without a heartbeat" in stack.processes["scheduler"].log_path.read_text()

    # One cancel in all; the retry took the batch's cancelling status as its first try's cancel.
    assert len(stack.batch_cancels(batch_id)) == 1
    text = (
        stack.logs / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=stop_and_wait" / "attempt=2.log"
    ).read_text()
    assert "is already cancelling: its cancel was requested by an earlier try" in text, text[-3000:]
    assert "Cancel requested" not in text
    settled = stack.xcom(DAG_ID, run_id, "stop_and_wait")
    assert settled["id"] == batch_id and settled["status"] == "cancelled"
    assert stack.batch(batch_id)["status"] == "cancelled"
    # The retry's Celery task ran on the new worker, never on the old one.
    ((celery_task_id,),) = stack.sql(
        "SELECT external_executor_id FROM task_instance WHERE dag_id = %s AND run_id = %s", DAG_ID, run_id
    )
    assert celery_task_id and celery_task_id in new_worker.log_path.read_text()
    assert celery_task_id not in old_worker.log_path.read_text()
