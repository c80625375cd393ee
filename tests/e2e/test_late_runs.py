"""A run that is late, on the real stack: its deadline's callback, in the triggerer, cancels its batches.

The callback's connection is stored in the metadata database (created through the REST API; no
environment variable names it): apache/airflow#63929 reports that async lookups of such connections
can fail in the triggerer.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.checks import bystanders
from tests.e2e.stack import EMULATOR_KEY, wait_until

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "e2e_psopenai_late_run"
METADB_CONN_ID = "psopenai_metadb"
# The DAG's deadline: 30 s after the run is queued (tests/e2e/dags/psopenai_e2e_deadline_dags.py).
LATE_AFTER_SEC = 30
# From the deadline to every batch of the run cancelling: the scheduler sees the missed deadline on
# its next loop (about a second here), the triggerer picks the callback up on its next loop, and
# listing and cancelling three batches takes well under a second.
LATE_CANCEL_BOUND_SEC = 60


def deadline_alerts(stack: AirflowStack) -> bool:
    """Return whether the stack's Airflow has Deadline Alerts (3.1+)."""
    version = str(stack.get("/api/v2/version")["version"])
    return tuple(int(part) for part in version.split(".")[:2]) >= (3, 1)


def create_metadb_connection(stack: AirflowStack) -> None:
    """Store the callback's connection in the metadata database, through the REST API."""
    assert METADB_CONN_ID.upper() not in "".join(stack.env), "the connection must not come from the environment"
    body = {
        "connection_id": METADB_CONN_ID,
        "conn_type": "psopenai",
        "host": stack.emulator_api_base,
        "password": EMULATOR_KEY,
    }
    response = stack.api.post("/api/v2/connections", json=body)
    assert response.status_code in (201, 409), response.text  # 409: an earlier test of this stack made it


def test_a_late_runs_batches_are_cancelled_once_by_its_deadline_callback(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    if not deadline_alerts(stack):
        pytest.skip("Deadline Alerts (DAG(deadline=...)) came with Airflow 3.1; this Airflow has none.")
    create_metadb_connection(stack)
    untouched = bystanders(stack, DAG_ID)
    run_id = stack.trigger(DAG_ID)

    def created() -> dict[str, Any] | None:
        tis = stack.task_instances(DAG_ID, run_id)
        state = tis.get("create_tagged", {}).get("state")
        assert state not in ("failed", "upstream_failed"), tis
        return tis if state == "success" else None

    tis = wait_until(created, 180, "create_tagged to create the run's batches")
    run = stack.dag_run(DAG_ID, run_id)
    deadline = datetime.fromisoformat(run["queued_at"]).timestamp() + LATE_AFTER_SEC
    created_at = datetime.fromisoformat(tis["create_tagged"]["end_date"]).timestamp()
    assert created_at < deadline, (
        f"create_tagged ended {created_at - deadline:.1f} s after the deadline: the machine is too loaded for "
        "this test's premise (the batches run when the deadline passes)"
    )
    batch_ids: list[str] = stack.xcom(DAG_ID, run_id, "create_tagged")
    assert len(batch_ids) == 3
    assert all(stack.batch(batch_id)["status"] == "in_progress" for batch_id in batch_ids)

    def all_cancelled() -> bool:
        return all(stack.batch(batch_id)["status"] in ("cancelling", "cancelled") for batch_id in batch_ids)

    wait_until(all_cancelled, LATE_CANCEL_BOUND_SEC + LATE_AFTER_SEC + 30, f"the batches of {run_id} to be cancelled")
    cancelled_at = max(stack.batch_cancels(batch_id)[0]["time"] for batch_id in batch_ids)
    assert deadline <= min(stack.batch_cancels(batch_id)[0]["time"] for batch_id in batch_ids)
    assert cancelled_at - deadline < LATE_CANCEL_BOUND_SEC
    # The triggerer stored the callback's result and runs on (a dict result would have stopped it).
    stack.assert_running()
    # The run is still running: the deadline's callback cancelled, not a failure.
    assert stack.dag_run(DAG_ID, run_id)["state"] == "running"
    assert stack.task_instances(DAG_ID, run_id)["work_for_long"]["state"] == "running"
    triggerer_log = stack.processes["triggerer"].log_tail(400)
    assert "acancel_run_batches: run" in triggerer_log and "3 cancels sent" in triggerer_log, triggerer_log

    # The run ends (marked failed): the provider's listener finds nothing left to cancel.
    stack.patch(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})
    time.sleep(5)  # a second cancel racing the first would show within seconds
    for batch_id in batch_ids:
        assert len([e for e in stack.batch_cancels(batch_id) if e["status"]]) == 1, batch_id
    for batch_id in untouched:
        assert stack.batch_cancels(batch_id) == [], batch_id
        assert stack.batch(batch_id)["status"] == "in_progress", batch_id
    stack.assert_running()
    for proc in stack.processes.values():
        assert EMULATOR_KEY not in proc.log_path.read_text(errors="replace"), proc.name
