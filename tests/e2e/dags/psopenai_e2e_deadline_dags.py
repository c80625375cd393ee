"""A DAG run that is late on the real stack: its deadline passes while its tagged batches run.

The deadline's callback runs in the triggerer, with a connection stored in the metadata database
(``psopenai_metadb``, created by the test through the REST API). Airflow 3.0 has no Deadline Alerts:
there the DAG parses without one and the test that needs it is skipped.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_psopenai.callbacks import acancel_run_batches
from airflow_psopenai.compat import DEADLINE_ALERTS

# The time from the run being queued to its deadline: create_tagged has created its batches well
# before it (a task start takes seconds); work_for_long sleeps far past it.
LATE_AFTER = timedelta(seconds=30)
METADB_CONN_ID = "psopenai_metadb"


def late_run_deadline() -> dict[str, Any]:
    """Return the DAG's deadline argument, on the lines that have Deadline Alerts."""
    if not DEADLINE_ALERTS:
        return {}
    from airflow_psopenai.compat import AsyncCallback, DeadlineAlert, DeadlineReference

    callback = AsyncCallback(acancel_run_batches, kwargs={"conn_id": METADB_CONN_ID, "timeout_sec": 60})
    return {
        "deadline": DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT, interval=LATE_AFTER, callback=callback)
    }


@task
def create_tagged() -> list[str]:
    """Create three batches with the hook in the task: each carries the run tags."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        return [str(hook.create_batch(f"file-e2e-late-{n}")["id"]) for n in range(3)]
    finally:
        hook.close()


@task(retries=0)
def work_for_long() -> None:
    """Hold the run open far past its deadline."""
    time.sleep(600)


with DAG(
    "e2e_psopenai_late_run",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["psopenai-e2e"],
    **late_run_deadline(),
):
    create_tagged() >> work_for_long()
