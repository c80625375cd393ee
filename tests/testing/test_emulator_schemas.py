"""Every body the emulator sends matches the official spec's schema, in every status and for every error.

The schemas in ``schemas/`` are copied from openai/openai-openapi (see each file's ``$comment``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest

from airflow_psopenai.resources import ASSISTANTS_BETA_HEADERS as BETA
from airflow_psopenai.resources import (
    BATCH,
    EVAL_RUN,
    FINE_TUNING_JOB,
    RESPONSE,
    THREAD_RUN,
    VECTOR_STORE_FILE_BATCH,
)
from airflow_psopenai.testing import Fault, ManualClock, OpenAIEmulator

if TYPE_CHECKING:
    import httpx

Validate = Callable[[object, int], None]


def fetch(api: httpx.Client, method: str, path: str, validate: Validate, **kwargs: Any) -> dict[str, object]:
    response = api.request(method, path, **kwargs)
    body = response.json()
    validate(body, response.status_code)
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("status", sorted(BATCH.statuses))
def test_batch_in_each_status(
    emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate, status: str
) -> None:
    batch = emulator.create_batch(status, metadata={"k": "v"})
    assert fetch(api, "GET", f"/v1/batches/{batch['id']}", validate_body)["status"] == status


@pytest.mark.parametrize("end", [None, "completed", "failed", "expired"])
def test_batch_through_a_cancel(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, validate_body: Validate, end: str | None
) -> None:
    batch = emulator.create_batch(race_to=end)
    clock.advance(3)
    assert fetch(api, "POST", f"/v1/batches/{batch['id']}/cancel", validate_body)["status"] == "cancelling"
    clock.advance(5)
    assert fetch(api, "GET", f"/v1/batches/{batch['id']}", validate_body)["status"] == (end or "cancelled")
    assert fetch(api, "GET", "/v1/batches", validate_body)["object"] == "list"


@pytest.mark.parametrize("status", sorted(THREAD_RUN.statuses))
def test_run_in_each_status(emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate, status: str) -> None:
    run = emulator.create_thread_run(status)
    path = f"/v1/threads/{run['thread_id']}/runs/{run['id']}"
    assert fetch(api, "GET", path, validate_body, headers=BETA)["status"] == status


@pytest.mark.parametrize("end", [None, "completed", "failed", "incomplete", "expired"])
def test_run_through_a_cancel(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, validate_body: Validate, end: str | None
) -> None:
    run = emulator.create_thread_run("queued", race_to=end)
    path = f"/v1/threads/{run['thread_id']}/runs/{run['id']}"
    assert fetch(api, "POST", path + "/cancel", validate_body, headers=BETA)["status"] == "cancelling"
    clock.advance(5)
    assert fetch(api, "GET", path, validate_body, headers=BETA)["status"] == (end or "cancelled")


@pytest.mark.parametrize("background", [True, False])
@pytest.mark.parametrize("status", sorted(RESPONSE.statuses))
def test_response_in_each_status(
    emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate, status: str, background: bool
) -> None:
    response = emulator.create_response(status, background)
    assert fetch(api, "GET", f"/v1/responses/{response['id']}", validate_body)["status"] == status


def test_response_through_a_cancel(emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate) -> None:
    response = emulator.create_response()
    assert fetch(api, "POST", f"/v1/responses/{response['id']}/cancel", validate_body)["status"] == "cancelled"


@pytest.mark.parametrize("status", sorted(FINE_TUNING_JOB.statuses))
def test_fine_tuning_job_in_each_status(
    emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate, status: str
) -> None:
    job = emulator.create_fine_tuning_job(status, metadata={"k": "v"})
    assert fetch(api, "GET", f"/v1/fine_tuning/jobs/{job['id']}", validate_body)["status"] == status
    assert fetch(api, "GET", "/v1/fine_tuning/jobs", validate_body, params={"metadata[k]": "v"})["data"]


@pytest.mark.parametrize("end", [None, "succeeded", "failed"])
def test_fine_tuning_job_through_a_cancel(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, validate_body: Validate, end: str | None
) -> None:
    created = fetch(api, "POST", "/v1/fine_tuning/jobs", validate_body, json={"model": "m", "training_file": "f"})
    assert created["status"] == "validating_files"
    job = emulator.create_fine_tuning_job(race_to=end)
    clock.advance(3)
    answer = fetch(api, "POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel", validate_body)
    assert answer["status"] == ("running" if end else "cancelled")
    clock.advance(5)
    assert fetch(api, "GET", f"/v1/fine_tuning/jobs/{job['id']}", validate_body)["status"] == (end or "cancelled")


@pytest.mark.parametrize("status", sorted(EVAL_RUN.statuses))
def test_eval_run_in_each_status(
    emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate, status: str
) -> None:
    run = emulator.create_eval_run("eval_1", status)
    assert fetch(api, "GET", f"/v1/evals/eval_1/runs/{run['id']}", validate_body)["status"] == status
    assert fetch(api, "GET", "/v1/evals/eval_1/runs", validate_body)["data"]


@pytest.mark.parametrize("end", [None, "completed", "failed"])
def test_eval_run_through_a_cancel(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, validate_body: Validate, end: str | None
) -> None:
    source = {"type": "jsonl", "source": {"type": "file_id", "id": "file-1"}}
    assert (
        fetch(api, "POST", "/v1/evals/eval_1/runs", validate_body, json={"data_source": source})["status"] == "queued"
    )
    run = emulator.create_eval_run("eval_1", race_to=end)
    path = f"/v1/evals/eval_1/runs/{run['id']}"
    assert fetch(api, "POST", path, validate_body)["status"] == ("in_progress" if end else "canceled")
    clock.advance(5)
    assert fetch(api, "GET", path, validate_body)["status"] == (end or "canceled")


@pytest.mark.parametrize("status", sorted(VECTOR_STORE_FILE_BATCH.statuses))
def test_file_batch_in_each_status(
    emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate, status: str
) -> None:
    batch = emulator.create_vector_store_file_batch("vs_1", status)
    path = f"/v1/vector_stores/vs_1/file_batches/{batch['id']}"
    assert fetch(api, "GET", path, validate_body)["status"] == status


@pytest.mark.parametrize("end", [None, "completed", "failed"])
def test_file_batch_through_a_cancel(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, validate_body: Validate, end: str | None
) -> None:
    created = fetch(api, "POST", "/v1/vector_stores/vs_1/file_batches", validate_body, json={"file_ids": ["a"]})
    assert created["status"] == "in_progress"
    batch = emulator.create_vector_store_file_batch("vs_1", race_to=end)
    path = f"/v1/vector_stores/vs_1/file_batches/{batch['id']}"
    assert fetch(api, "POST", path + "/cancel", validate_body)["status"] == ("in_progress" if end else "cancelled")
    clock.advance(5)
    assert fetch(api, "GET", path, validate_body)["status"] == (end or "cancelled")


def test_every_error_of_the_other_kinds(emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate) -> None:
    job = emulator.create_fine_tuning_job("succeeded")
    run = emulator.create_eval_run("eval_1", "failed")
    file_batch = emulator.create_vector_store_file_batch("vs_1", "completed")
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/v1/fine_tuning/jobs/{job['id']}/cancel", {}),
        ("GET", "/v1/fine_tuning/jobs/nope", {}),
        ("POST", "/v1/fine_tuning/jobs", {"json": {"model": "m"}}),
        ("POST", "/v1/fine_tuning/jobs", {"json": {"model": "m", "training_file": "f", "metadata": {"k": 1}}}),
        ("GET", "/v1/fine_tuning/jobs", {"params": {"limit": 101}}),
        ("POST", f"/v1/evals/eval_1/runs/{run['id']}", {}),
        ("GET", "/v1/evals/eval_1/runs/nope", {}),
        ("POST", "/v1/evals/eval_1/runs", {"json": {}}),
        ("POST", f"/v1/vector_stores/vs_1/file_batches/{file_batch['id']}/cancel", {}),
        ("GET", "/v1/vector_stores/vs_1/file_batches/nope", {}),
        ("POST", "/v1/vector_stores/vs_1/file_batches", {"json": {"file_ids": []}}),
    ]
    for method, path, kwargs in calls:
        assert "error" in fetch(api, method, path, validate_body, **kwargs), (method, path)


def test_every_error(emulator: OpenAIEmulator, api: httpx.Client, validate_body: Validate) -> None:
    done_batch, done_run = emulator.create_batch("completed"), emulator.create_thread_run("completed")
    run_path = f"/v1/threads/{done_run['thread_id']}/runs/{done_run['id']}"
    foreground, done_response = emulator.create_response(background=False), emulator.create_response("failed")
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"/v1/batches/{done_batch['id']}/cancel", {}),
        ("GET", "/v1/batches/nope", {}),
        ("GET", "/v1/batches", {"params": {"limit": 0}}),
        ("POST", "/v1/batches", {"json": {}}),
        ("POST", "/v1/batches", {"content": b"{"}),
        ("POST", run_path + "/cancel", {"headers": BETA}),
        ("GET", run_path, {}),
        ("GET", "/v1/threads/nope/runs/nope", {"headers": BETA}),
        ("GET", f"/v1/threads/{done_run['thread_id']}/runs/nope", {"headers": BETA}),
        ("POST", f"/v1/responses/{foreground['id']}/cancel", {}),
        ("POST", f"/v1/responses/{done_response['id']}/cancel", {}),
        ("GET", "/v1/responses/nope", {}),
        ("GET", "/v1/nothing", {}),
        ("GET", "/openai/batches/nope", {}),
        ("GET", "/v1/batches", {"headers": {"Authorization": "Bearer sk-wrong-but-long-enough"}}),
        ("GET", "/v1/batches", {"headers": {"Authorization": ""}}),
    ]
    for method, path, kwargs in calls:
        assert "error" in fetch(api, method, path, validate_body, **kwargs), (method, path)
    for fault in (Fault.rate_limit(1), Fault.insufficient_quota(), *(Fault.server_error(s) for s in (500, 502, 503))):
        emulator.add_fault(fault)
        assert "error" in fetch(api, "GET", "/v1/batches", validate_body)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"object": "batch", "id": "b", "status": "in_progress", "created_at": 1}, 200),
        ({"object": "thread.run", "id": "r", "status": "bogus"}, 200),
        ({"object": "response", "id": "x", "created_at": "yesterday"}, 200),
        ({"error": {"message": "m", "type": "t"}}, 400),
    ],
)
def test_schemas_reject_wrong_bodies(validate_body: Validate, body: dict[str, object], status: int) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_body(body, status)
