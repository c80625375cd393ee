"""create_batch in a running task takes over the batch an earlier try created: after a clear, past a page
that fails, with the API's clock behind, and only for the same map index.

The task's context is the one Airflow gives a running task (``get_current_context``), made by hand so
that a test can move its try number and its run's start as a retry or a Clear does; the batches live in
the emulator.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.exceptions import PSOpenAIError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import Fault, OpenAIEmulator
from tests.conftest import connection_json

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class RunningTask:
    """The context of one task instance of a DAG run, as get_current_context returns it in a task."""

    def __init__(self, run_after: datetime, map_index: int = -1) -> None:
        self.ti = SimpleNamespace(
            dag_id="pipeline", run_id="run-1", task_id="create", map_index=map_index, try_number=1
        )
        self.dag_run = SimpleNamespace(dag_id="pipeline", run_id="run-1", run_after=run_after, start_date=run_after)

    def context(self) -> dict[str, Any]:
        return {"ti": self.ti, "dag_run": self.dag_run}

    def retried(self, *, started: datetime | None = None) -> None:
        """The next try; ``started``: the run's new start_date (a Clear of a failed run sets it to now)."""
        self.ti.try_number += 1
        if started is not None:
            self.dag_run.start_date = started


@pytest.fixture
def task(monkeypatch: pytest.MonkeyPatch) -> RunningTask:
    from airflow.providers.common.compat import sdk

    running = RunningTask(run_after=datetime.now(UTC) - timedelta(minutes=1))
    monkeypatch.setattr(sdk, "get_current_context", running.context)
    return running


def posts(emulator: OpenAIEmulator) -> int:
    return len(emulator.requests(method="POST", path="/v1/batches"))


def create(input_file_id: str = "file-a", **kwargs: Any) -> dict[str, Any]:
    hook = PSOpenAIHook()
    try:
        return hook.create_batch(input_file_id, **kwargs)
    finally:
        hook.close()


def test_a_cleared_task_takes_over_the_batch_of_its_earlier_try(emulator: OpenAIEmulator, task: RunningTask) -> None:
    first = create()
    # The UI's Clear of the failed run: its start_date is now (after the batch), its run_after stays.
    task.retried(started=datetime.now(UTC) + timedelta(seconds=10))
    again = create()
    assert again["id"] == first["id"]
    assert posts(emulator) == 1


def seed_page_before(emulator: OpenAIEmulator, count: int) -> None:
    """Batches of other tasks since the run started, older than the try's own: they fill the later pages."""
    for _ in range(count):
        emulator.create_batch(metadata={"airflow_dag_id": "other"})


def test_a_later_page_that_fails_once_is_read_again(
    emulator: OpenAIEmulator, task: RunningTask, fast_backoff: None
) -> None:
    seed_page_before(emulator, 150)
    first = create()
    task.retried()
    emulator.add_fault(Fault.server_error(502), method="GET", path="/v1/batches", skip=1)
    listed_before = len(emulator.requests(method="GET", path="/v1/batches"))
    assert create()["id"] == first["id"]
    assert posts(emulator) == 1
    assert len(emulator.requests(method="GET", path="/v1/batches")) - listed_before == 3  # page 1, page 2 twice


def test_a_later_page_that_cannot_be_read_keeps_what_was_found(
    emulator: OpenAIEmulator, task: RunningTask, fast_backoff: None
) -> None:
    seed_page_before(emulator, 150)
    first = create()
    task.retried()
    emulator.add_fault(Fault.server_error(502), method="GET", path="/v1/batches", times=100, skip=1)
    assert create()["id"] == first["id"]  # page 1 held it: no duplicate
    assert posts(emulator) == 1
    # A batch the earlier try never created may be on the unread pages: the try fails instead of creating it.
    with pytest.raises(PSOpenAIError, match=r"could not read the batch list past page 1 .*This try fails rather"):
        create("file-b")
    assert posts(emulator) == 1


def test_a_list_the_gateway_does_not_serve_still_creates(
    emulator: OpenAIEmulator, task: RunningTask, captured_logs: Callable[[], str]
) -> None:
    emulator.add_fault(Fault.answer(405, '{"error": {"message": "Method not allowed."}}'), method="GET", times=5)
    create()
    assert posts(emulator) == 1
    assert "Could not look for a batch an earlier try of this task created, so creating one" in captured_logs()


@pytest.fixture
def emulator_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIEmulator]:
    """An emulator whose clock (the batches' created_at) is 3 s behind this machine's."""
    with OpenAIEmulator(clock=lambda: time.time() - 3) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(emulator))
        yield emulator


@pytest.mark.server
def test_a_server_clock_behind_this_one_hides_no_earlier_batch(
    emulator_behind: OpenAIEmulator, task: RunningTask
) -> None:
    task.dag_run.run_after = task.dag_run.start_date = datetime.now(UTC)
    first = create()
    assert first["created_at"] < task.dag_run.run_after.timestamp() - 1
    task.retried()
    assert create()["id"] == first["id"]
    assert posts(emulator_behind) == 1


@pytest.mark.server
def test_the_cutoff_margin_is_a_setting(
    emulator_behind: OpenAIEmulator, task: RunningTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    task.dag_run.run_after = task.dag_run.start_date = datetime.now(UTC)
    create()
    task.retried()
    monkeypatch.setenv("AIRFLOW__PSOPENAI__CUTOFF_MARGIN_SEC", "0")
    create()  # no margin: the batch the API dates 3 s before the run is not looked at
    assert posts(emulator_behind) == 2
    monkeypatch.setenv("AIRFLOW__PSOPENAI__CUTOFF_MARGIN_SEC", "soon")
    task.retried()
    with pytest.raises(PSOpenAIError, match=r"\[psopenai\] cutoff_margin_sec must be a number of seconds"):
        create()
    assert posts(emulator_behind) == 2


def test_an_unmapped_task_never_takes_over_a_mapped_instances_batch(
    emulator: OpenAIEmulator, task: RunningTask
) -> None:
    create(metadata={"airflow_map_index": "0"})  # what a mapped instance of the same task ID carries
    task.retried()
    create()
    assert posts(emulator) == 2


def test_a_mapped_instance_takes_over_only_its_own_batch(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat import sdk

    run_after = datetime.now(UTC) - timedelta(minutes=1)
    instances = {index: RunningTask(run_after, map_index=index) for index in (0, 1)}
    created = {}
    for index, running in instances.items():
        monkeypatch.setattr(sdk, "get_current_context", running.context)
        created[index] = create()["id"]
    for index, running in instances.items():
        running.retried()
        monkeypatch.setattr(sdk, "get_current_context", running.context)
        assert create()["id"] == created[index]
    assert posts(emulator) == 2


def test_a_retry_never_takes_over_another_deployments_batch_of_the_same_task(
    emulator: OpenAIEmulator, task: RunningTask, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Production's try of the same DAG, run ID and task, with the same file and endpoint, on the same account.
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "production")
    production = create()
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "staging")
    task.retried()
    mine = create()
    assert mine["id"] != production["id"]
    assert mine["metadata"]["airflow_deployment"] == "staging"
    assert posts(emulator) == 2
