"""StopOrphanedBatchesOperator with dag.test() against the emulator: it cancels the batches a failed run left
(no callback could act on it) once, keeps every other batch, and costs a page per 100 batches and a state
lookup per DAG run."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.cancelling.sweep import (
    NO_DEPLOYMENT_TAG,
    NO_RUN_TAGS,
    NOT_RUNNING,
    OTHER_DEPLOYMENT,
    batches_to_cancel,
    require_run_states,
    runs_of_running_batches,
)
from airflow_psopenai.exceptions import PSOpenAIConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult

    RunDag = Callable[..., DagRunResult]


def cancels(emulator: OpenAIEmulator) -> list[str]:
    return [entry.path.split("/")[3] for entry in emulator.requests(method="POST", path="*/cancel")]


def tags(dag_id: str, run_id: str, **more: str) -> dict[str, str]:
    return {"airflow_dag_id": dag_id, "airflow_run_id": run_id, **more}


@pytest.mark.server
def test_the_sweep_cancels_a_failed_runs_batch_once_and_keeps_every_other(
    emulator: OpenAIEmulator, run_dag: RunDag, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "staging")
    failed = run_dag("sweep_failing_pipeline")
    assert failed.state == "failed"
    succeeded = run_dag("sweep_succeeding_pipeline")
    assert succeeded.state == "success"
    left = emulator.requests(method="POST", path="/v1/batches")
    assert len(left) == 2
    [orphan] = [str(b["id"]) for b in _batches(emulator) if b["metadata"]["airflow_run_id"] == failed.dag_run.run_id]
    run = tags("sweep_failing_pipeline", failed.dag_run.run_id)
    emulator.create_batch(metadata={**run, "airflow_deployment": "production"})  # the same run ids, elsewhere
    emulator.create_batch(metadata=run)  # tagged before the deployment tag existed
    emulator.create_batch(metadata={"airflow_deployment": "staging", "team": "search"})  # no run tags
    emulator.create_batch(metadata={**tags("gone", "r"), "airflow_deployment": "staging"})  # a run Airflow forgot
    emulator.create_batch(status="completed", metadata={**run, "airflow_deployment": "staging"})

    sweep = run_dag("sweep")
    assert sweep.state == "success"
    result = sweep.xcom("sweep")
    assert result["cancelled"] == [orphan]
    assert result["would_cancel"] == [] and result["failed"] == []
    assert cancels(emulator) == [orphan]
    assert result["kept"][OTHER_DEPLOYMENT] == 1
    assert result["kept"][NO_DEPLOYMENT_TAG] == 1
    assert result["kept"][NO_RUN_TAGS] == 1
    assert result["kept"]["run success"] == 1
    assert result["kept"]["run missing"] == 1
    assert result["kept"][NOT_RUNNING] == 1

    again = run_dag("sweep").xcom("sweep")
    assert again["cancelled"] == []
    assert cancels(emulator) == [orphan]  # no second cancel


@pytest.mark.server
def test_a_dry_run_sends_nothing_and_says_what_it_would_cancel(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    failed = run_dag("sweep_failing_pipeline")
    [orphan] = [str(b["id"]) for b in _batches(emulator)]
    result = run_dag("sweep_dry_run").xcom("sweep")
    assert result["would_cancel"] == [orphan]
    assert result["cancelled"] == []
    assert cancels(emulator) == []
    assert failed.state == "failed"


@pytest.mark.server
def test_the_sweep_costs_a_page_per_hundred_batches_and_one_state_lookup_per_run(
    emulator: OpenAIEmulator, run_dag: RunDag, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_psopenai import compat

    batches, runs = 250, 5
    for n in range(batches):
        emulator.create_batch(metadata={**tags("gone", f"run-{n % runs}"), "airflow_deployment": "default"})
    asked: list[tuple[str, str]] = []
    real = compat.dag_run_state

    def counted(ti: Any, dag_id: str, run_id: str) -> str:
        asked.append((dag_id, run_id))
        return real(ti, dag_id, run_id)

    monkeypatch.setattr(compat, "dag_run_state", counted)
    before = len(emulator.requests(method="GET", path="/v1/batches"))
    result = run_dag("sweep_missing_runs").xcom("sweep")
    pages = len(emulator.requests(method="GET", path="/v1/batches")) - before
    assert pages <= math.ceil(batches / 100) + 1
    assert sorted(asked) == sorted(("gone", f"run-{n}") for n in range(runs))
    assert len(result["cancelled"]) == batches


def _batches(emulator: OpenAIEmulator) -> list[dict[str, Any]]:
    import httpx

    answer = httpx.get(
        f"{emulator.api_base}/batches?limit=100", headers={"authorization": f"Bearer {emulator.api_key}"}
    )
    return list(answer.json()["data"])


# -- the decisions, directly ---------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_queued_or_running_run_is_never_swept() -> None:
    for states in (("running",), ("failed", "queued"), "failed", ()):
        with pytest.raises(PSOpenAIConfigurationError, match="run_states"):
            require_run_states(states)
    assert require_run_states(["failed", "success"]) == ("failed", "success")


@pytest.mark.unit
def test_a_run_whose_state_is_unknown_keeps_its_batches() -> None:
    mine = {"airflow_deployment": "d", **tags("a", "r")}
    batches = [
        {"id": "b1", "status": "in_progress", "metadata": mine},
        {"id": "b2", "status": "validating", "metadata": mine},
    ]
    kept: dict[str, int] = {}
    runs = runs_of_running_batches(batches, "d", kept)
    assert runs == {("a", "r"): ["b1", "b2"]}
    assert batches_to_cancel(runs, {("a", "r"): None}, ("failed",), kept) == []
    assert kept == {"state unknown": 2}
    assert batches_to_cancel(runs, {("a", "r"): "running"}, ("failed",), {}) == []
    assert batches_to_cancel(runs, {("a", "r"): "failed"}, ("failed",), {}) == ["b1", "b2"]
