"""Every example DAG, triggered on the real Airflow against the emulator, ends in the states it documents."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.stack import EXAMPLE_DAGS

if TYPE_CHECKING:
    from tests.e2e.stack import AirflowStack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

FLAGSHIP = "example_psopenai_cancel_on_failure"
# dag_id -> (the run's final state, the tasks that do not end "success" and their final state).
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    # process_records fails on purpose; fail_run turns that into a failed run; the cancel, the sensor
    # and the report succeed.
    FLAGSHIP: ("failed", {"process_records": "failed", "fail_run": "failed"}),
    "example_psopenai_mapped": ("success", {}),
    "example_psopenai_response": ("success", {}),
    # process_results fails on purpose; the teardown cancels the run's batches.
    "example_psopenai_run_cleanup": ("failed", {"process_results": "failed"}),
    # The work stops the batch itself: the cancel on failure and the watcher are skipped.
    "example_psopenai_teardown": ("success", {"cancel_on_failure": "skipped", "fail_run": "skipped"}),
    "example_psopenai_thread_run": ("success", {}),
    "example_psopenai_xcom_ids": ("success", {}),
    # wait_for_results gives up after 30 s (batches never complete on the emulator); the teardown cancels.
    "example_psopenai_deadline": ("failed", {"wait_for_results": "failed"}),
}
# Run apart, not beside the others: a sweep would take the flagship's failed run for an orphan. Its run
# is in tests/examples/ and the sweep's own run on this stack in tests/e2e/test_sweep.py.
RUN_APART = {"example_psopenai_sweep"}


def test_every_example_dag_ends_as_documented(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    # Cancels settle in 5 s: the deferred waits are seen deferred, the examples stay quick.
    stack.emulator_settings(cancel_delay=5)
    files = {path.name for path in EXAMPLE_DAGS.glob("example_psopenai_*.py")}
    dags = stack.wait_for_dags(set(EXPECTED) | RUN_APART, files, keep_paused=RUN_APART)
    examples = {dag_id for dag_id, dag in dags.items() if Path(dag["fileloc"]).name in files}
    assert examples == set(EXPECTED) | RUN_APART, "example DAGs changed: update EXPECTED"

    started = time.time()
    runs = [(dag_id, stack.trigger(dag_id)) for dag_id in sorted(EXPECTED)]
    results = stack.wait_runs(runs, timeout=400)

    for dag_id, run_id in runs:
        result = results[dag_id, run_id]
        run_state, not_success = EXPECTED[dag_id]
        expected = {key: not_success.get(key.split("[")[0], "success") for key in result.states}
        assert result.states == expected, f"{dag_id}: {result.states}"
        assert result.state == run_state, f"{dag_id}: run {result.state}"
        assert set(not_success) <= {key.split("[")[0] for key in result.states}, dag_id

    # No batch or run was cancelled twice by any example (cleanups and sensors send no cancel of their own).
    cancels = Counter(
        entry["path"] for entry in stack.journal("POST", "*/cancel") if entry["time"] >= started and entry["status"]
    )
    assert cancels, "the examples sent no cancel"
    assert all(count == 1 for count in cancels.values()), cancels

    # The flagship: the batch it submitted was cancelled once, in a wait deferred to the triggerer,
    # confirmed by the sensor, and its partial results reported.
    run_id = dict(runs)[FLAGSHIP]
    batch_id = stack.xcom(FLAGSHIP, run_id, "submit_batch")["id"]
    assert len(stack.batch_cancels(batch_id)) == 1
    assert stack.batch(batch_id)["status"] == "cancelled"
    # The triggerer's log of the task shows the deferred wait (sampled states could miss the deferral).
    assert f"batch '{batch_id}' is cancelled" in stack.task_log(FLAGSHIP, run_id, "cancel_batch", trigger=True)
    assert stack.xcom(FLAGSHIP, run_id, "confirm_cancelled")["status"] == "cancelled"
    report = stack.xcom(FLAGSHIP, run_id, "report_partial_results")
    assert report["batch_id"] == batch_id
    assert report["status"] == "cancelled"

    # The mapped example: one cancel per batch it launched, each instance deferred.
    mapped_run = dict(runs)["example_psopenai_mapped"]
    mapped = results["example_psopenai_mapped", mapped_run]
    cancel_keys = [key for key in mapped.states if key.startswith("cancel_batches[")]
    assert len(cancel_keys) == 3, mapped.states
    trigger_logs = stack.task_log_files("example_psopenai_mapped", mapped_run, "cancel_batches")
    deferred = {p.parent.name for p in trigger_logs if ".trigger." in p.name and "is cancelled" in p.read_text()}
    assert deferred == {f"map_index={index}" for index in range(3)}, trigger_logs
    summary = stack.xcom("example_psopenai_mapped", mapped_run, "summarize")
    assert summary["statuses"] == ["cancelled"] * 3

    # The teardown example: the work stopped the batch itself; the teardown sent no second cancel.
    teardown_run = dict(runs)["example_psopenai_teardown"]
    teardown_batch = stack.xcom("example_psopenai_teardown", teardown_run, "submit_batch")["id"]
    assert len(stack.batch_cancels(teardown_batch)) == 1
    assert stack.batch(teardown_batch)["status"] == "cancelled"
