"""The ``/_emulator`` endpoints that drive an emulator in another process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from airflow_psopenai.testing import Fault, ManualClock, OpenAIEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def admin(emulator: OpenAIEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{emulator.base_url}/_emulator", timeout=10) as client:
        yield client


def test_create_objects(emulator: OpenAIEmulator, admin: httpx.Client) -> None:
    batch = admin.post(
        "/batches", json={"status": "validating", "race_to": "completed", "total_requests": 7, "metadata": {"a": "b"}}
    ).json()
    assert emulator.get_batch(batch["id"]) == batch
    assert (batch["status"], batch["metadata"]) == ("validating", {"a": "b"})

    run = admin.post("/thread_runs", json={"status": "queued", "thread_id": "thread_x", "run_id": "run_x"}).json()
    assert emulator.get_thread_run("thread_x", "run_x") == run

    response = admin.post("/responses", json={"status": "queued", "background": False}).json()
    assert emulator.get_response(response["id"]) == response
    assert response["background"] is False

    # Every field is optional.
    assert admin.post("/batches", json={}).json()["status"] == "in_progress"
    assert admin.post("/batches").json()["request_counts"]["total"] == 100


def test_race_to_set_over_http_decides_how_a_cancel_ends(
    emulator: OpenAIEmulator, admin: httpx.Client, clock: ManualClock
) -> None:
    created = clock()
    run = admin.post("/thread_runs", json={"race_to": "completed"}).json()
    httpx.post(
        f"{emulator.api_base}/threads/{run['thread_id']}/runs/{run['id']}/cancel",
        headers={"Authorization": f"Bearer {emulator.api_key}", "OpenAI-Beta": "assistants=v2"},
    )
    clock.advance(emulator.cancel_delay)
    assert admin.get(f"/history/{run['id']}").json() == [
        [created, "in_progress"],
        [created, "cancelling"],
        [created + emulator.cancel_delay, "completed"],
    ]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/batches", {"status": "queued"}, "Unknown batch status"),
        ("/batches", {"colour": "red"}, "Unknown field"),
        ("/batches", {"total_requests": "many"}, "wrong type"),
        ("/batches", {"total_requests": True}, "wrong type"),
        ("/batches", [], "JSON object"),
        ("/thread_runs", {"race_to": "cancelled"}, "race_to"),
        ("/responses", {"background": "yes"}, "wrong type"),
        ("/settings", {"latency": -1}, "latency"),
        ("/faults", {"fault": {"kind": "teapot"}}, "Unknown fault kind"),
        ("/faults", {"times": 2}, "Expected"),
        ("/faults", {"random": {"seed": 1}}, "rate"),
        ("/faults", {"random": {"rate": 0.5, "faults": ["drop"]}}, "JSON object"),
    ],
)
def test_bad_input_is_400(admin: httpx.Client, path: str, body: object, message: str) -> None:
    response = admin.post(path, json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_invalid_json_is_400(admin: httpx.Client) -> None:
    assert admin.post("/batches", content=b"{").status_code == 400


def test_unknown_admin_route_and_history_are_404(admin: httpx.Client) -> None:
    assert admin.get("/nothing").status_code == 404
    response = admin.get("/history/nope")
    assert (response.status_code, response.json()["error"]["message"]) == (404, "No object found with id 'nope'.")


def test_journal_with_filters(emulator: OpenAIEmulator, admin: httpx.Client, clock: ManualClock) -> None:
    batch = emulator.create_batch()
    auth = {"Authorization": f"Bearer {emulator.api_key}"}
    httpx.get(f"{emulator.api_base}/batches/{batch['id']}", headers=auth)
    httpx.post(f"{emulator.api_base}/batches/{batch['id']}/cancel?x=1", headers=auth)
    entries = admin.get("/journal").json()
    assert [entry["method"] for entry in entries] == ["GET", "POST"]
    assert entries[1] == {
        "method": "POST",
        "path": f"/v1/batches/{batch['id']}/cancel",
        "raw_target": f"/v1/batches/{batch['id']}/cancel?x=1",
        "query": {"x": "1"},
        "headers": entries[1]["headers"],
        "time": clock(),
        "status": 200,
        "fault": None,
        "connection": 2,  # two clients, so two connections
        "applied": False,
    }
    assert entries[0]["connection"] == 1
    assert entries[1]["headers"]["authorization"] == "<redacted>"
    assert len(admin.get("/journal", params={"method": "POST"}).json()) == 1
    assert len(admin.get("/journal", params={"path": "/v1/batches/*/cancel"}).json()) == 1
    # Admin calls themselves are not recorded.
    assert len(emulator.journal) == 2


def test_scripted_faults(emulator: OpenAIEmulator, admin: httpx.Client) -> None:
    body = {"fault": {"kind": "server_error", "status": 502, "should_retry": False}, "method": "GET", "times": 2}
    assert admin.post("/faults", json=body).json() == {"ok": True}
    url = f"{emulator.api_base}/batches"
    answers = [httpx.get(url) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [502, 502, 401]
    assert answers[0].headers["x-should-retry"] == "false"


def test_random_faults_and_clearing_them(emulator: OpenAIEmulator, admin: httpx.Client) -> None:
    body = {"random": {"rate": 1, "seed": 3, "faults": [{"kind": "rate_limit", "retry_after_ms": 250}]}}
    admin.post("/faults", json=body)
    answer = httpx.get(f"{emulator.api_base}/batches")
    assert (answer.status_code, answer.headers["retry-after-ms"]) == (429, "250")
    assert admin.delete("/faults").json() == {"ok": True}
    assert httpx.get(f"{emulator.api_base}/batches").status_code == 401


def test_settings(emulator: OpenAIEmulator, admin: httpx.Client) -> None:
    assert admin.get("/settings").json() == {"cancel_delay": 5.0, "latency": 0.0}
    assert admin.post("/settings", json={"cancel_delay": 1}).json() == {"cancel_delay": 1.0, "latency": 0.0}
    assert admin.post("/settings", json={"latency": 0.01}).json() == {"cancel_delay": 1.0, "latency": 0.01}
    assert (emulator.cancel_delay, emulator.latency) == (1.0, 0.01)


def test_reset(emulator: OpenAIEmulator, admin: httpx.Client) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.drop(), times=2)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{emulator.api_base}/batches/x")
    assert admin.post("/reset").json() == {"ok": True}
    assert emulator.journal == []
    assert admin.get(f"/history/{batch['id']}").status_code == 404
    assert httpx.get(f"{emulator.api_base}/batches").status_code == 401
