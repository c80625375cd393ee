"""The OpenAI page's JSON API on Airflow's own app against the emulator: listing, cancels and every auth rule.

Users (the simple auth manager): vera is a viewer, uma a user, otto an op.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_psopenai.testing import Fault

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from airflow_psopenai.testing.dag_tests import DagRunResult
    from tests.web.conftest import PageClient

BATCHES = "/psopenai/api/batches"
LIST = "/v1/batches"


def tagged(dag_id: str = "nightly", run_id: str = "manual__1", **more: str) -> dict[str, str]:
    return {"airflow_dag_id": dag_id, "airflow_run_id": run_id, "airflow_task_id": "submit", **more}


def cancel_path(batch_id: str) -> str:
    return f"{BATCHES}/{batch_id}/cancel"


def cancels_sent(emulator: OpenAIEmulator) -> list[str]:
    return [entry.path for entry in emulator.requests("POST") if entry.path.endswith("/cancel")]


def audit_entries(event: str) -> list[dict[str, Any]]:
    from airflow.models.log import Log
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(Log).where(Log.event == event).order_by(Log.id)).all()
        return [
            {"owner": row.owner, "dag_id": row.dag_id, "run_id": row.run_id, **json.loads(row.extra)} for row in rows
        ]


def assert_no_key(answer: Any, emulator: OpenAIEmulator) -> None:
    key = emulator.api_key
    assert key not in answer.text
    assert key not in json.dumps(dict(answer.headers))


# -- listing -------------------------------------------------------------------------------------------------


def test_a_viewer_sees_the_running_batches_of_dags_with_their_tags(
    page_server: PageClient, emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "eu-prod")  # this deployment's batch
    batch = emulator.create_batch(metadata=tagged(airflow_map_index="3", airflow_deployment="eu-prod"))
    emulator.create_batch(status="completed", metadata=tagged())

    answer = page_server.get(BATCHES, "vera")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [item["id"] for item in body["data"]] == [batch["id"]]
    assert body["has_more"] is False
    item = body["data"][0]
    assert item["status"] == "in_progress"
    assert item["created_at"] == batch["created_at"]
    assert (item["endpoint"], item["model"], item["usage"]) == (batch["endpoint"], batch["model"], None)
    assert item["request_counts"]["total"] == batch["request_counts"]["total"]
    assert (item["dag_id"], item["run_id"], item["task_id"], item["map_index"]) == ("nightly", "manual__1", "submit", 3)
    assert item["deployment"] == "eu-prod"
    assert item["can_cancel"] is False  # a viewer may not edit runs
    assert item["console_url"] is None  # not OpenAI's API base
    assert_no_key(answer, emulator)


def test_untagged_batches_are_listed_to_those_who_may_read_the_connection(
    page_server: PageClient, emulator: OpenAIEmulator
) -> None:
    untagged = emulator.create_batch()
    ours = emulator.create_batch(metadata=tagged())

    def listed(user: str) -> dict[str, bool]:
        return {item["id"]: item["can_cancel"] for item in page_server.get(BATCHES, user).json()["data"]}

    assert listed("vera") == {ours["id"]: False}
    assert listed("uma") == {ours["id"]: True}
    assert listed("otto") == {ours["id"]: True, untagged["id"]: True}


def test_all_pages_through_the_account_and_the_cursor_passes_what_was_filtered_out(
    page_server: PageClient, emulator: OpenAIEmulator
) -> None:
    # Created oldest first: the list is newest first.
    ids = [str(emulator.create_batch(status="completed", metadata=tagged())["id"]) for _ in range(3)]
    hidden = emulator.create_batch(status="completed")  # untagged: not for uma
    ids += [str(emulator.create_batch(status="completed", metadata=tagged())["id"]) for _ in range(2)]
    newest_first = ids[::-1]

    first = page_server.get(BATCHES, "uma", params={"status": "all", "limit": "3"}).json()
    assert [item["id"] for item in first["data"]] == newest_first[:3]
    assert first["has_more"] is True
    # The third shown is the fourth of the account: the untagged batch before it was read and passed.
    assert first["last_id"] == newest_first[2]
    second = page_server.get(BATCHES, "uma", params={"status": "all", "limit": "3", "after": first["last_id"]}).json()
    assert [item["id"] for item in second["data"]] == newest_first[3:]
    assert second["has_more"] is False
    assert hidden["id"] not in {item["id"] for item in first["data"] + second["data"]}

    running = page_server.get(BATCHES, "uma").json()
    assert running["data"] == []


def test_filters_by_dag(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    wanted = emulator.create_batch(metadata=tagged("nightly"))
    emulator.create_batch(metadata=tagged("hourly"))

    answer = page_server.get(BATCHES, "vera", params={"dag_id": "nightly"}).json()

    assert [item["id"] for item in answer["data"]] == [wanted["id"]]


def test_running_reads_back_no_further_than_a_batch_can_run(
    page_server: PageClient, emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_psopenai.web import app

    # The page takes "now" to be two days on: every batch already there is older than any batch can run.
    two_days = 2 * 24 * 3600
    real_time = time.time
    monkeypatch.setattr(app.time, "time", lambda: real_time() + two_days)
    for _ in range(150):
        emulator.create_batch(metadata=tagged())

    running = page_server.get(BATCHES, "vera").json()
    assert running["data"] == []
    assert running["has_more"] is False
    assert len(emulator.requests("GET", LIST)) == 1  # stopped at the first batch past the cutoff

    everything = page_server.get(BATCHES, "vera", params={"status": "all", "limit": "100"}).json()
    assert len(everything["data"]) == 100


def test_viewers_share_one_read_of_the_list(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    emulator.create_batch(metadata=tagged())
    emulator.latency = 0.3  # the viewers ask while the first read is under way
    tokens = {user: page_server.bearer(user) for user in ("vera", "uma", "otto")}
    answers: list[int] = []

    def view(user: str) -> None:
        answers.append(page_server.client.get(BATCHES, headers=tokens[user]).status_code)

    viewers = [threading.Thread(target=view, args=(user,)) for user in ("vera", "uma", "otto") * 3]
    for viewer in viewers:
        viewer.start()
    for viewer in viewers:
        viewer.join()
    view("vera")  # afterwards, within the interval

    assert answers == [200] * 10
    assert len(emulator.requests("GET", LIST)) == 1


def test_a_list_that_repeats_itself_ends_and_says_so(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch(metadata=tagged())
    # A gateway that ignores `after`: every page is the first one, and says more follow.
    page = {"object": "list", "data": [batch], "has_more": True, "first_id": batch["id"], "last_id": batch["id"]}
    emulator.add_fault(Fault.answer(200, json.dumps(page)), "GET", LIST, times=5)

    answer = page_server.get(BATCHES, "vera", params={"status": "all"})

    assert answer.status_code == 200
    body = answer.json()
    assert [item["id"] for item in body["data"]] == [batch["id"]]
    assert "repeats itself" in body["incomplete"]
    assert body["has_more"] is False
    assert len(emulator.requests("GET", LIST)) == 2


def test_a_hanging_list_ends_within_the_budget_and_says_so(
    page_server: PageClient, emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_psopenai.web import app

    monkeypatch.setattr(app, "LIST_BUDGET_SEC", 1.0)
    emulator.add_fault(Fault.hang(), "GET", LIST)

    answer = page_server.get(BATCHES, "vera")

    assert answer.status_code == 502
    assert "time" in answer.json()["detail"]
    assert_no_key(answer, emulator)


def test_a_hanging_list_leaves_the_api_server_answering(
    page_server: PageClient, emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_psopenai.web import app

    monkeypatch.setattr(app, "LIST_BUDGET_SEC", 60.0)
    emulator.add_fault(Fault.hang(), "GET", LIST)
    token = page_server.bearer("vera")
    listing = threading.Thread(target=lambda: page_server.client.get(BATCHES, headers=token))
    listing.start()
    try:
        while not emulator.requests("GET", LIST):  # the list request has reached the hanging server
            time.sleep(0.05)
        health = page_server.client.get("/api/v2/monitor/health")
        page = page_server.client.get("/psopenai/", headers=token)
        dags = page_server.client.get("/api/v2/dags", headers=token)
        assert listing.is_alive()  # still waiting on the list
    finally:
        emulator.clear_faults()
        emulator.stop()  # ends the hanging request
        listing.join()
    assert health.status_code == 200
    assert page.status_code == 200
    assert dags.status_code == 200


def test_an_upstream_error_names_no_key(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.server_error(502, html=True, echo_headers=True), "GET", LIST, times=10)

    answer = page_server.get(BATCHES, "vera")

    assert answer.status_code == 502
    assert_no_key(answer, emulator)


# -- cancels -------------------------------------------------------------------------------------------------


def test_a_user_cancels_a_batch_of_a_dag_once_and_the_audit_log_says_so(
    page_server: PageClient, emulator: OpenAIEmulator
) -> None:
    batch = emulator.create_batch(metadata=tagged())

    first = page_server.post(cancel_path(batch["id"]), "uma")
    second = page_server.post(cancel_path(batch["id"]), "uma")  # a second click

    assert first.status_code == 200, first.text
    assert first.json() == {"id": batch["id"], "status": "cancelling", "action": "sent"}
    assert second.json()["action"] == "not_cancellable"
    assert cancels_sent(emulator) == [f"/v1/batches/{batch['id']}/cancel"]
    entries = audit_entries("psopenai.cancel_batch")
    assert [(e["owner"], e["batch_id"], e["action"], e["dag_id"], e["run_id"]) for e in entries] == [
        ("uma", batch["id"], "sent", "nightly", "manual__1"),
        ("uma", batch["id"], "not_cancellable", "nightly", "manual__1"),
    ]
    assert_no_key(first, emulator)


def test_a_viewer_may_not_cancel(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch(metadata=tagged())

    answer = page_server.post(cancel_path(batch["id"]), "vera")

    assert answer.status_code == 403
    assert "nightly" in answer.json()["detail"]
    assert cancels_sent(emulator) == []
    assert audit_entries("psopenai.cancel_batch")[-1]["action"] == "refused"


def test_an_untagged_batch_needs_edit_on_the_connection(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()

    refused = page_server.post(cancel_path(batch["id"]), "uma")
    done = page_server.post(cancel_path(batch["id"]), "otto")

    assert refused.status_code == 403
    assert "connection" in refused.json()["detail"]
    assert done.json()["action"] == "sent"
    assert len(cancels_sent(emulator)) == 1


def test_another_deployments_batch_is_governed_by_the_connection_s_rights(
    page_server: PageClient, emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "staging")
    ours = emulator.create_batch(metadata=tagged(airflow_deployment="staging"))
    theirs = emulator.create_batch(metadata=tagged(airflow_deployment="production"))

    def listed(user: str) -> dict[str, bool]:
        return {item["id"]: item["can_cancel"] for item in page_server.get(BATCHES, user).json()["data"]}

    # The DAG's rights reach this deployment's batch only; the other deployment's is the connection's business.
    assert listed("uma") == {ours["id"]: True}
    assert listed("otto") == {ours["id"]: True, theirs["id"]: True}
    refused = page_server.post(cancel_path(theirs["id"]), "uma")
    assert refused.status_code == 403
    assert cancels_sent(emulator) == []
    assert page_server.post(cancel_path(theirs["id"]), "otto").json()["action"] == "sent"
    assert len(cancels_sent(emulator)) == 1


@pytest.mark.parametrize(
    ("batch_id", "named"),
    [
        ("file-abc123", "no batch ID"),
        ("resp_abc123", "no batch ID"),
        ("batch_..%2F..%2Ffiles", "no batch ID"),
        ("%2E%2E", "no batch ID"),
        ("batch_" + "a" * 200, "characters long"),
    ],
)
def test_a_malformed_batch_id_is_refused_before_any_request(
    page_server: PageClient, emulator: OpenAIEmulator, batch_id: str, named: str
) -> None:
    token = page_server.bearer("otto")
    answer = page_server.client.post(cancel_path(batch_id), headers=token)

    assert answer.status_code == 400, answer.text
    assert named in answer.json()["detail"]
    assert emulator.requests() == []


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "done"}, "status must be one of running, all"),
        ({"limit": "101"}, "limit must be a whole number from 1 to 100"),
        ({"limit": "-1"}, "limit must be"),
        ({"after": "file-1"}, "after 'file-1' is no batch ID"),
        ({"dag_id": "a/b"}, "no DAG ID"),
    ],
)
def test_a_malformed_parameter_is_refused_before_any_request(
    page_server: PageClient, emulator: OpenAIEmulator, params: dict[str, str], named: str
) -> None:
    token = page_server.bearer("vera")
    answer = page_server.client.get(BATCHES, params=params, headers=token)

    assert answer.status_code == 400, answer.text
    assert named in answer.json()["detail"]
    assert emulator.requests() == []


def test_an_unknown_batch_is_404(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    answer = page_server.post(cancel_path("batch_unknown"), "otto")

    assert answer.status_code == 404
    assert "batch_unknown" in answer.json()["detail"]


# -- who is asking -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/psopenai/"),
        ("GET", "/psopenai/page.js"),
        ("GET", "/psopenai/page.css"),
        ("GET", BATCHES),
        ("POST", cancel_path("batch_abc")),
        ("POST", "/psopenai/api/dags/nightly/runs/manual__1/cancel"),
    ],
)
def test_every_route_needs_a_user(page_server: PageClient, emulator: OpenAIEmulator, method: str, path: str) -> None:
    answer = page_server.client.request(method, path)

    assert answer.status_code == 401
    assert answer.json() == {"detail": "Not authenticated"}  # Airflow's answer, not its UI's page
    assert emulator.requests() == []


def test_a_cookie_borne_cancel_from_another_origin_is_refused(
    page_server: PageClient, emulator: OpenAIEmulator
) -> None:
    batch = emulator.create_batch(metadata=tagged())
    client = page_server.client
    client.cookies.set("_token", page_server.token("uma"))
    try:
        cross_site = client.post(cancel_path(batch["id"]), headers={"Sec-Fetch-Site": "cross-site"})
        other_origin = client.post(cancel_path(batch["id"]), headers={"Origin": "http://evil.test"})
        no_origin = client.post(cancel_path(batch["id"]))
        assert cancels_sent(emulator) == []
        if not AIRFLOW_V_3_1_PLUS:  # Airflow 3.0's get_user reads no cookie: it is no credential at all
            assert [cross_site.status_code, other_origin.status_code, no_origin.status_code] == [401, 401, 401]
            return
        assert [cross_site.status_code, other_origin.status_code, no_origin.status_code] == [403, 403, 403]

        page = client.get("/psopenai/")  # reading with the cookie is fine
        assert page.status_code == 200
        same_origin = client.post(cancel_path(batch["id"]), headers={"Sec-Fetch-Site": "same-origin"})
        assert same_origin.json()["action"] == "sent"
    finally:
        client.cookies.clear()
    # A script's bearer token is no cookie: another origin's headers do not matter.
    other = emulator.create_batch(metadata=tagged())
    scripted = page_server.post(cancel_path(other["id"]), "uma", headers={"Sec-Fetch-Site": "cross-site"})
    assert scripted.json()["action"] == "sent"


def test_batches_of_a_dag_the_user_may_not_read_are_neither_listed_nor_cancelled(
    page_server: PageClient, emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.api_fastapi.app import get_auth_manager

    manager = get_auth_manager()
    allowed = manager.is_authorized_dag

    def is_authorized_dag(**kwargs: Any) -> bool:
        details = kwargs.get("details")
        return getattr(details, "id", None) != "private" and allowed(**kwargs)

    monkeypatch.setattr(manager, "is_authorized_dag", is_authorized_dag)
    public = emulator.create_batch(metadata=tagged("nightly"))
    private = emulator.create_batch(metadata=tagged("private"))

    listed = page_server.get(BATCHES, "otto").json()
    refused = page_server.post(cancel_path(private["id"]), "otto")

    assert [item["id"] for item in listed["data"]] == [public["id"]]
    assert refused.status_code == 403
    assert cancels_sent(emulator) == []


# -- a DAG run's batches --------------------------------------------------------------------------------------


def test_a_run_s_batches_are_listed_and_cancelled_by_those_who_may_edit_its_runs(
    page_server: PageClient, emulator: OpenAIEmulator, run_dag: Callable[..., DagRunResult]
) -> None:
    result = run_dag("page_run_with_batches", count=2)
    assert result.state == "success"
    run = result.dag_run
    other = emulator.create_batch(metadata=tagged("page_run_with_batches", "another_run"))
    path = f"/psopenai/api/dags/{run.dag_id}/runs/{run.run_id}/cancel"

    listed = page_server.get(BATCHES, "vera", params={"dag_id": run.dag_id, "run_id": run.run_id}).json()
    refused = page_server.post(path, "vera")
    done = page_server.post(path, "uma")

    assert sorted(item["id"] for item in listed["data"]) == sorted(result.xcom("submit"))
    assert refused.status_code == 403
    assert done.status_code == 200, done.text
    assert "2 cancels sent" in done.json()["summary"]
    assert sorted(cancels_sent(emulator)) == sorted(f"/v1/batches/{b}/cancel" for b in result.xcom("submit"))
    assert emulator.get_batch(other["id"])["status"] == "in_progress"
    entries = audit_entries("psopenai.cancel_run_batches")
    assert [(e["owner"], e["run_id"], e["action"]) for e in entries] == [
        ("vera", run.run_id, "refused"),
        ("uma", run.run_id, "sent"),
    ]


def test_an_unknown_run_is_404(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    answer = page_server.post("/psopenai/api/dags/nightly/runs/no_such_run/cancel", "uma")

    assert answer.status_code == 404
    assert emulator.requests() == []
