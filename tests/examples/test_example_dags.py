"""The example DAGs: they parse on their own, and each one really runs (dag.test) against the emulator."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from airflow_psopenai.testing import Fault

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from airflow_psopenai.testing.dag_tests import DagRunner
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.py"))
EXPECTED_DAG_IDS = {
    "example_psopenai_cancel_on_failure",
    "example_psopenai_xcom_ids",
    "example_psopenai_teardown",
    "example_psopenai_mapped",
    "example_psopenai_thread_run",
    "example_psopenai_response",
    "example_psopenai_run_cleanup",
    "example_psopenai_deadline",
    "example_psopenai_sweep",
}


def batch_cancels(emulator: OpenAIEmulator) -> list[str]:
    """Return the batch IDs of every cancel request the emulator received, in order."""
    return [entry.path.split("/")[3] for entry in emulator.requests(method="POST", path="/v1/batches/*/cancel")]


def created_batch_ids(emulator: OpenAIEmulator) -> list[str]:
    """Return the IDs of every batch the emulator holds, oldest first (listed through the API)."""
    response = httpx.get(
        f"{emulator.api_base}/batches",
        params={"limit": 100},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
    )
    response.raise_for_status()
    return [batch["id"] for batch in reversed(response.json()["data"])]


# -- parsing ----------------------------------------------------------------------------------------


def test_example_dags_parse_without_import_errors(airflow_db: None) -> None:
    from tests.conftest import dag_bag_class

    bag = dag_bag_class()(str(EXAMPLES))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED_DAG_IDS
    for dag in bag.dags.values():
        if dag.dag_id == "example_psopenai_sweep":  # the maintenance DAG: every 15 minutes, one run at a time
            assert not dag.catchup and dag.max_active_runs == 1
        else:
            assert type(dag.timetable).__name__ == "NullTimetable", dag.dag_id  # schedule=None
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id
        assert "example" in dag.tags, dag.dag_id


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_file_is_self_contained(path: Path) -> None:
    """Each file is copied alone into a dags folder: it may import only the standard library, airflow and us."""
    tree = ast.parse(path.read_text())
    allowed = {"__future__", "airflow", "airflow_psopenai", "json", "logging", "time", "typing", "urllib", "datetime"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= allowed, f"{path.name} imports {roots - allowed}"
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [s for s in strings if s.startswith("sk-")], f"{path.name} holds an API key"
    assert ast.get_docstring(tree), f"{path.name} has no module docstring"


# -- 1. cancel on upstream failure ----------------------------------------------------------------------


def test_cancel_on_failure_cancels_confirms_and_reports(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("example_psopenai_cancel_on_failure")

    assert result.task_states == {
        "submit_batch": "success",
        "process_records": "failed",
        "cancel_batch": "success",
        "confirm_cancelled": "success",
        "report_partial_results": "success",
        "fail_run": "failed",
    }
    assert result.state == "failed"  # expected: the processing task failed

    (batch_id,) = created_batch_ids(emulator)
    assert batch_cancels(emulator) == [batch_id]  # cancelled exactly once
    assert len(emulator.requests(method="POST", path="/v1/batches")) == 1
    batch = emulator.get_batch(batch_id)
    assert batch["status"] == "cancelled"
    assert batch["input_file_id"] == "file-psopenai-example-input"
    assert batch["metadata"].pop("airflow_create_nonce")
    assert batch["metadata"] == {
        "airflow_deployment": "default",
        "airflow_dag_id": "example_psopenai_cancel_on_failure",
        "airflow_run_id": result.dag_run.run_id,
        "airflow_task_id": "submit_batch",
    }
    assert [status for _, status in emulator.status_history(batch_id)] == ["in_progress", "cancelling", "cancelled"]

    assert result.xcom("cancel_batch")["status"] == "cancelled"  # pass_through after wait
    assert result.xcom("confirm_cancelled")["id"] == batch_id
    report = result.xcom("report_partial_results")
    assert report == {
        "batch_id": batch_id,
        "status": "cancelled",
        "request_counts": batch["request_counts"],
        "output_file_id": batch["output_file_id"],
    }


def test_cancel_on_failure_leaves_the_batch_alone_when_processing_succeeds(
    emulator: OpenAIEmulator, run_dag: RunDag
) -> None:
    result = run_dag("example_psopenai_cancel_on_failure", fail_processing=False)

    assert result.state == "success"
    assert result.task_states["process_records"] == "success"
    for task_id in ("cancel_batch", "confirm_cancelled", "report_partial_results", "fail_run"):
        assert result.task_states[task_id] == "skipped", task_id
    assert batch_cancels(emulator) == []
    (batch_id,) = created_batch_ids(emulator)
    assert emulator.get_batch(batch_id)["status"] == "in_progress"


def test_cancel_on_failure_takes_the_input_file_from_the_params(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("example_psopenai_cancel_on_failure", input_file_id="file-abc123")
    assert result.task_states["cancel_batch"] == "success"
    (batch_id,) = created_batch_ids(emulator)
    assert emulator.get_batch(batch_id)["input_file_id"] == "file-abc123"


# -- 2. IDs through XCom --------------------------------------------------------------------------------


def test_xcom_ids_cancels_each_batch_once(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("example_psopenai_xcom_ids")

    assert result.state == "success", result.task_states
    assert set(result.task_states.values()) == {"success"}
    submitted = {label: result.xcom(f"submit_{label}")["id"] for label in ("a", "b")}
    submitted["c"] = result.xcom("submit_c", key="id")  # multiple_outputs: each key is its own XCom
    assert len(set(submitted.values())) == 3
    for label, cancel_task in (("a", "cancel_by_template"), ("b", "cancel_by_object"), ("c", "cancel_by_key")):
        cancelled = result.xcom(cancel_task)
        assert cancelled["id"] == submitted[label], cancel_task
        assert cancelled["status"] == "cancelling"
        metadata = emulator.get_batch(submitted[label])["metadata"]
        assert metadata.pop("airflow_create_nonce")
        assert metadata == {
            "airflow_deployment": "default",
            "airflow_dag_id": "example_psopenai_xcom_ids",
            "airflow_run_id": result.dag_run.run_id,
            "airflow_task_id": f"submit_{label}",
            "example": label,
        }
    assert sorted(batch_cancels(emulator)) == sorted(submitted.values())
    assert result.rendered_fields("cancel_by_template")["batch_id"] == submitted["a"]


# -- 3. teardown ----------------------------------------------------------------------------------------


def test_teardown_succeeds_with_nothing_left_to_cancel(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("example_psopenai_teardown", sample_seconds=0)

    assert result.task_states == {
        "submit_batch": "success",
        "sample_batch": "success",
        "cancel_on_failure": "skipped",
        "fail_run": "skipped",
        "cleanup_batch": "success",
    }
    assert result.state == "success"
    (batch_id,) = created_batch_ids(emulator)
    # The work stopped the batch; the teardown found it cancelling, sent nothing and waited for it.
    assert batch_cancels(emulator) == [batch_id]
    assert result.xcom("cleanup_batch")["status"] == "cancelled"
    assert result.xcom("sample_batch")["batch_id"] == batch_id


def test_teardown_after_a_cancel_on_failure_sends_no_second_cancel(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """The work fails: the one_failed task cancels at once; the teardown, after it, finds nothing left to cancel."""
    result = run_dag("example_psopenai_teardown", sample_seconds=0, fail_work=True)

    assert result.task_states == {
        "submit_batch": "success",
        "sample_batch": "failed",
        "cancel_on_failure": "success",
        "fail_run": "failed",
        "cleanup_batch": "success",
    }
    assert result.state == "failed"  # fail_run: the work failed
    (batch_id,) = created_batch_ids(emulator)
    assert batch_cancels(emulator) == [batch_id]  # one cancel, by cancel_on_failure
    assert result.rendered_fields("cancel_on_failure")["batch_id"] == batch_id
    assert result.xcom("cancel_on_failure")["status"] == "cancelled"
    assert result.xcom("cleanup_batch")["status"] == "cancelled"
    assert result.ended_at["cancel_on_failure"] <= result.ended_at["cleanup_batch"]
    assert emulator.get_batch(batch_id)["status"] == "cancelled"


def test_teardown_cancels_when_the_cancel_on_failure_could_not(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """The cancel-on-failure task fails too (the API refuses it): the teardown still runs, and cancels."""
    refused = {"error": {"message": "Cancels are off today.", "type": "invalid_request_error", "code": None}}
    emulator.add_fault(Fault.answer(400, json.dumps(refused)), method="POST", path="/v1/batches/*/cancel")
    result = run_dag("example_psopenai_teardown", sample_seconds=0, fail_work=True)

    assert result.task_states == {
        "submit_batch": "success",
        "sample_batch": "failed",
        "cancel_on_failure": "failed",
        "fail_run": "failed",
        "cleanup_batch": "success",
    }
    assert result.state == "failed"
    (batch_id,) = created_batch_ids(emulator)
    assert batch_cancels(emulator) == [batch_id, batch_id]  # refused, then sent by the teardown
    assert result.xcom("cleanup_batch")["status"] == "cancelled"
    assert emulator.get_batch(batch_id)["status"] == "cancelled"


def test_the_teardown_recipe_with_the_setups_xcomarg_does_not_parse() -> None:
    """Why cancel_on_failure takes a template: with the setup's XComArg, Airflow refuses the DAG."""
    from airflow.sdk import DAG, task

    from airflow_psopenai.operators import StopBatchOperator

    @task
    def submit() -> dict[str, str]:
        return {"id": "batch_1"}

    @task
    def work(batch: dict[str, str]) -> None:
        return None

    with DAG("setup_followed_by_one_failed", schedule=None) as dag:
        batch = submit()
        done = work(batch)
        done >> StopBatchOperator(task_id="cancel_on_failure", batch=batch, trigger_rule="one_failed")
        done >> StopBatchOperator(task_id="cleanup", batch=batch, if_not_cancellable="succeed").as_teardown(
            setups=batch
        )
    with pytest.raises(ValueError, match="Setup tasks must be followed with trigger rule ALL_SUCCESS"):
        dag.validate()


def test_run_cleanup_cancels_every_batch_of_the_run_in_one_task(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    other_run = emulator.create_batch(
        metadata={"airflow_dag_id": "example_psopenai_run_cleanup", "airflow_run_id": "x"}
    )
    result = run_dag("example_psopenai_run_cleanup", batches=4)

    assert result.task_states == {
        "submit_batches": "success",
        "process_results": "failed",
        "cancel_run_batches": "success",
    }
    assert result.state == "failed"
    launched = result.xcom("submit_batches")
    assert len(launched) == 4
    assert sorted(batch_cancels(emulator)) == sorted(launched)  # one task, each batch once
    assert [batch["status"] for batch in result.xcom("cancel_run_batches")] == ["cancelled"] * 4
    assert emulator.get_batch(other_run["id"])["status"] == "in_progress"  # another run's batch


# -- late runs: a deadline's callback ----------------------------------------------------------------------


def deadline_alert_of(dagbag: Any, dag_id: str) -> Any:
    """Return the one deadline alert of a DAG, checking it calls acancel_run_batches from the triggerer."""
    (alert,) = dagbag.get_dag(dag_id).deadline
    assert type(alert.callback).__name__ == "AsyncCallback"
    assert alert.callback.path == "airflow_psopenai.callbacks.acancel_run_batches"
    return alert


def running_run_id(dag_id: str) -> int | None:
    """Return the database ID of the DAG's running run (dag.test() runs one at a time), if any."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.state == "running")
        return session.scalars(query).first()


def run_deadline_example(run_dag: RunDag, dagbag: Any, monkeypatch: pytest.MonkeyPatch, **conf: Any) -> DagRunResult:
    """Run example_psopenai_deadline with dag.test(), which never fires a deadline (the scheduler does).

    Airflow 3.1's dag.test() evaluates a DAGRUN_QUEUED_AT deadline before its run is queued and fails
    ("No matching record found in the database"); the scheduler creates runs queued. There the DAG
    runs without its deadline, which dag.test() would not fire anyway.
    """
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS

    from airflow_psopenai.compat import DEADLINE_ALERTS

    if DEADLINE_ALERTS and not AIRFLOW_V_3_2_PLUS:
        monkeypatch.setattr(dagbag.get_dag("example_psopenai_deadline"), "deadline", None)
    return run_dag("example_psopenai_deadline", **conf)


def test_deadline_example_fails_without_its_results_and_its_teardown_cancels(
    emulator: OpenAIEmulator, run_dag: RunDag, dagbag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_psopenai.compat import DEADLINE_ALERTS

    alert = deadline_alert_of(dagbag, "example_psopenai_deadline") if DEADLINE_ALERTS else None
    result = run_deadline_example(run_dag, dagbag, monkeypatch, max_wait_seconds=0)

    assert result.task_states == {
        "submit_batches": "success",
        "wait_for_results": "failed",
        "cancel_leftover_batches": "success",
    }
    assert result.state == "failed"
    launched = result.xcom("submit_batches")
    assert len(launched) == 2
    assert sorted(batch_cancels(emulator)) == sorted(launched)  # by the teardown, once each
    assert [batch["status"] for batch in result.xcom("cancel_leftover_batches")] == ["cancelled"] * 2
    if alert is not None:
        # A deadline that fires after the run ended (apache/airflow#60927) finds nothing left to cancel.
        from tests.conftest import deadline_context, run_as_the_triggerer

        events = run_as_the_triggerer(alert.callback.path, alert.callback.kwargs, deadline_context(result.dag_run.id))
        assert events[-1]["body"].endswith(
            "2 batches tagged with it, 0 running: 0 cancels sent, 0 could not be cancelled."
        )
        assert sorted(batch_cancels(emulator)) == sorted(launched)


def test_deadline_example_succeeds_when_its_batches_complete_in_time(
    emulator: OpenAIEmulator, run_dag: RunDag, dagbag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run meets its deadline: it succeeds (dag.test() drops its deadline), and nothing is cancelled."""
    from airflow_psopenai.testing import BatchSchedule

    emulator.batch_schedule = BatchSchedule(complete_after=1.0)
    result = run_deadline_example(run_dag, dagbag, monkeypatch, max_wait_seconds=120, poll_seconds=0.2)

    assert result.state == "success", result.task_states
    launched = result.xcom("submit_batches")
    assert result.xcom("wait_for_results") == dict.fromkeys(launched, "completed")
    assert batch_cancels(emulator) == []
    assert result.missed_deadlines == []


def test_deadline_example_cancels_a_late_runs_batches_while_it_waits(
    emulator: OpenAIEmulator, run_dag: DagRunner, dagbag: Any
) -> None:
    """The deadline is missed while wait_for_results waits: the DAG's own callback runs as the triggerer runs it."""
    from airflow_psopenai.compat import DEADLINE_ALERTS, MISSING_DEADLINE_ALERTS
    from airflow_psopenai.testing.dag_tests import deadline_run_unsupported

    if not DEADLINE_ALERTS:
        pytest.skip(f"{MISSING_DEADLINE_ALERTS}; this is 3.0")
    if reason := deadline_run_unsupported():
        pytest.skip(reason)
    alert = deadline_alert_of(dagbag, "example_psopenai_deadline")
    assert alert.callback.kwargs == {"conn_id": "psopenai_default", "timeout_sec": 120}

    result = run_dag.missing_deadlines(
        "example_psopenai_deadline", once_running="wait_for_results", max_wait_seconds=120, poll_seconds=0.2
    )

    (missed,) = result.missed_deadlines
    assert (missed.callback_path, missed.kind, missed.state) == (alert.callback.path, "AsyncCallback", "success")
    assert missed.output is not None
    assert missed.output.endswith("2 batches tagged with it, 2 running: 2 cancels sent, 0 could not be cancelled.")
    launched = result.xcom("submit_batches")
    assert sorted(batch_cancels(emulator)) == sorted(launched)  # by the deadline's callback; none by the teardown
    assert result.task_states == {
        "submit_batches": "success",
        "wait_for_results": "failed",  # its batches were cancelled: the run was late
        "cancel_leftover_batches": "success",
    }
    assert result.ended_at["wait_for_results"] - result.dag_run.start_date.timestamp() < 120


# -- 4. mapped ------------------------------------------------------------------------------------------


def test_mapped_cancels_every_batch_of_the_run_once(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    files = [f"file-mapped-{n}" for n in range(5)]
    result = run_dag("example_psopenai_mapped", input_file_ids=files)

    assert result.state == "success", result.task_states
    assert [result.task_states[f"cancel_batches[{i}]"] for i in range(5)] == ["success"] * 5
    batch_ids = created_batch_ids(emulator)
    assert len(batch_ids) == 5
    assert sorted(batch_cancels(emulator)) == sorted(batch_ids)  # each exactly once
    assert sorted(emulator.get_batch(b)["input_file_id"] for b in batch_ids) == files
    cancelled = [result.xcom("cancel_batches", map_index=i) for i in range(5)]
    assert sorted(batch["id"] for batch in cancelled) == sorted(batch_ids)
    summary = result.xcom("summarize")
    assert summary["batches"] == 5
    assert summary["statuses"] == ["cancelled"] * 5


# -- 5. thread run --------------------------------------------------------------------------------------


def test_thread_run_created_on_the_emulator_is_cancelled(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("example_psopenai_thread_run")

    assert result.state == "success", result.task_states
    assert set(result.task_states.values()) == {"success"}
    run = result.xcom("start_run")
    cancels = emulator.requests(method="POST", path="/v1/threads/*/runs/*/cancel")
    assert [entry.path for entry in cancels] == [f"/v1/threads/{run['thread_id']}/runs/{run['id']}/cancel"]
    assert all(entry.headers.get("openai-beta") == "assistants=v2" for entry in emulator.journal)
    assert emulator.get_thread_run(run["thread_id"], run["id"])["status"] == "cancelled"
    report = result.xcom("report_run")
    assert report["status"] == "cancelled"
    assert report["run_id"] == run["id"]


def test_thread_run_named_by_params_is_retrieved_and_cancelled(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    run = emulator.create_thread_run(status="requires_action")
    result = run_dag("example_psopenai_thread_run", thread_id=run["thread_id"], run_id=run["id"])

    assert result.state == "success", result.task_states
    assert result.xcom("start_run")["id"] == run["id"]
    assert len(emulator.requests(method="POST", path="*/cancel")) == 1
    assert result.xcom("report_run")["status"] == "cancelled"


def test_thread_run_that_finished_first_skips_the_sensor(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """soft_fail: a run that completed before the cancel took effect skips the check and the report."""
    run = emulator.create_thread_run(race_to="completed")
    result = run_dag("example_psopenai_thread_run", thread_id=run["thread_id"], run_id=run["id"])

    assert result.task_states["cancel_run"] == "success"
    assert result.xcom("cancel_run")["status"] == "completed"
    assert result.task_states["confirm_cancelled"] == "skipped"
    assert result.task_states["report_run"] == "skipped"


def test_thread_run_without_ids_fails_clearly_off_the_emulator(
    openai_emulator: OpenAIEmulator,
    run_dag: RunDag,
    monkeypatch: pytest.MonkeyPatch,
    captured_logs: Callable[[], str],
) -> None:
    """On a server without the emulator's admin endpoint, start_run says the IDs must be given."""
    # Azure's v1 base: the API answers there, but {base}/_emulator/thread_runs is an unknown path (404).
    host = openai_emulator.base_url + "/openai/v1"
    monkeypatch.setenv(
        "AIRFLOW_CONN_PSOPENAI_DEFAULT",
        json.dumps({"conn_type": "psopenai", "host": host, "password": openai_emulator.api_key}),
    )
    result = run_dag("example_psopenai_thread_run")

    assert result.task_states["start_run"] == "failed"
    assert result.task_states["cancel_run"] == "upstream_failed"
    assert "exists only on the airflow-psopenai emulator" in captured_logs()
    assert [(e.method, e.path, e.status) for e in openai_emulator.journal] == [
        ("POST", "/openai/_emulator/thread_runs", 404)
    ]


# -- 6. background response ------------------------------------------------------------------------------


def test_background_response_created_on_the_emulator_is_cancelled(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    result = run_dag("example_psopenai_response")

    assert result.state == "success", result.task_states
    assert set(result.task_states.values()) == {"success"}
    response = result.xcom("start_response")
    cancels = emulator.requests(method="POST", path="/v1/responses/*/cancel")
    assert [entry.path for entry in cancels] == [f"/v1/responses/{response['id']}/cancel"]
    assert emulator.get_response(response["id"])["status"] == "cancelled"
    assert result.xcom("report_response") == {"response_id": response["id"], "status": "cancelled", "usage": None}


def test_background_response_named_by_params_is_retrieved_and_cancelled(
    emulator: OpenAIEmulator, run_dag: RunDag
) -> None:
    response = emulator.create_response(status="queued")
    result = run_dag("example_psopenai_response", response_id=response["id"])

    assert result.state == "success", result.task_states
    assert result.xcom("start_response")["id"] == response["id"]
    assert result.xcom("report_response")["status"] == "cancelled"


def test_a_completed_response_is_refused_without_a_retry(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    """PSOpenAI's rule (if_not_cancellable="fail"): nothing was cancelled, and a retry could not change that."""
    response = emulator.create_response(status="completed")
    result = run_dag("example_psopenai_response", response_id=response["id"])

    assert result.task_states["cancel_response"] == "failed"
    assert result.tries["cancel_response"] == 1
    assert emulator.requests(method="POST") == []


def test_a_response_not_created_in_the_background_fails_with_the_reason(
    emulator: OpenAIEmulator, run_dag: RunDag, captured_logs: Callable[[], str]
) -> None:
    response = emulator.create_response(status="in_progress", background=False)
    result = run_dag("example_psopenai_response", response_id=response["id"])

    assert result.task_states["cancel_response"] == "failed"
    assert "only responses created with background=true can be cancelled" in captured_logs()


def test_parsing_the_examples_loads_no_hook_trigger_or_worker_code() -> None:
    """A DAG processor parses every DAG file often: what our operators, sensors and callbacks need at run time
    (the hook and its HTTP stack, the triggers, the cancel and wait loops) is imported only when a task runs."""
    script = (
        "import json, runpy, sys\n"
        f"for path in {[str(path) for path in EXAMPLE_FILES]!r}:\n"
        "    runpy.run_path(path)\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.startswith('airflow_psopenai'))))\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    loaded = json.loads(completed.stdout.splitlines()[-1])
    assert "airflow_psopenai.operators.stop_batches" in loaded  # the examples did load our operators
    # Airflow reads the provider's info (and with it the connection form's plain data) while parsing.
    run_time = (
        "airflow_psopenai.hooks.psopenai",
        "airflow_psopenai.client.pool",
        "airflow_psopenai.client.settings",
        "airflow_psopenai.client.retry",
        "airflow_psopenai.triggers",
        "airflow_psopenai.cancelling.bulk",
        "airflow_psopenai.waiting.waits",
        "airflow_psopenai.waiting.status_board",
    )
    assert [name for name in loaded if name.startswith(run_time)] == []


def test_the_sweep_cancels_what_a_failed_run_left_and_nothing_else(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    failed = run_dag("example_psopenai_cancel_on_failure")
    assert failed.state == "failed"  # expected: its processing task failed
    run = {"airflow_dag_id": "example_psopenai_cancel_on_failure", "airflow_run_id": failed.dag_run.run_id}
    # A batch of the failed run that its callback did not see (created by another process after it ran).
    left = str(emulator.create_batch(metadata={**run, "airflow_deployment": "default"})["id"])
    emulator.create_batch(metadata={**run, "airflow_deployment": "another-airflow"})
    emulator.create_batch(metadata={"airflow_deployment": "default"})
    cancels_before = len(batch_cancels(emulator))
    result = run_dag("example_psopenai_sweep")
    assert result.state == "success"
    swept = result.xcom("sweep")
    assert swept["cancelled"] == [left]
    assert swept["kept"]["another deployment"] == 1
    assert swept["kept"]["no run tags"] == 1
    assert batch_cancels(emulator)[cancels_before:] == [left]
