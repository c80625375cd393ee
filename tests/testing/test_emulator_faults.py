"""Fault injection: each kind as a client sees it, scripted and random plans, the JSON form."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from airflow_psopenai.testing import Fault, OpenAIEmulator
from airflow_psopenai.testing.faults import FaultPlan

CANCEL = "/v1/batches/*/cancel"


class TestKinds:
    def test_rate_limit_sends_both_retry_headers(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.rate_limit(retry_after=2, retry_after_ms=1500))
        response = api.get("/v1/batches")
        assert response.status_code == 429
        assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("2", "1500")
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
        assert "x-should-retry" not in response.headers
        assert (emulator.journal[0].status, emulator.journal[0].fault) == (429, "rate_limit")

    def test_rate_limit_with_an_http_date(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.rate_limit(retry_after="Wed, 21 Oct 2015 07:28:00 GMT"))
        response = api.get("/v1/batches")
        assert response.headers["retry-after"] == "Wed, 21 Oct 2015 07:28:00 GMT"

    def test_rate_limit_without_delay_sends_no_retry_headers(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.rate_limit())
        response = api.get("/v1/batches")
        assert response.status_code == 429
        assert "retry-after" not in response.headers
        assert "retry-after-ms" not in response.headers

    def test_insufficient_quota(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.insufficient_quota())
        response = api.get("/v1/batches")
        assert response.status_code == 429
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")

    @pytest.mark.parametrize("status", [500, 502, 503])
    def test_server_error_in_json(self, emulator: OpenAIEmulator, api: httpx.Client, status: int) -> None:
        emulator.add_fault(Fault.server_error(status))
        response = api.get("/v1/batches")
        assert response.status_code == status
        assert response.json()["error"]["type"] == "server_error"

    def test_answer_sends_its_status_body_and_type_as_is(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.answer(200, "<html>ok</html>", content_type="text/html"))
        odd_error = {"error": {"message": "odd", "type": "invalid_request_error", "param": None, "code": None}}
        emulator.add_fault(Fault.answer(409, json.dumps(odd_error), should_retry=True))
        emulator.add_fault(Fault.answer(400, content_type="text/plain"))
        html, odd, empty = (api.get("/v1/batches") for _ in range(3))
        assert (html.status_code, html.headers["content-type"], html.text) == (200, "text/html", "<html>ok</html>")
        assert (odd.status_code, odd.json(), odd.headers["x-should-retry"]) == (409, odd_error, "true")
        assert odd.headers["content-type"] == "application/json"
        assert (empty.status_code, empty.content, empty.headers["content-type"]) == (400, b"", "text/plain")
        assert all(answer.headers["x-request-id"].startswith("req_") for answer in (html, odd, empty))

    def test_server_error_as_a_proxys_html_page(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.server_error(502, html=True))
        response = api.get("/v1/batches")
        assert response.status_code == 502
        assert response.headers["content-type"] == "text/html"
        assert response.text.startswith("<html>")
        assert "502 Bad Gateway" in response.text
        assert response.headers["x-request-id"].startswith("req_")

    @pytest.mark.parametrize(
        ("fault", "status"),
        [
            (Fault.rate_limit(retry_after=1, should_retry=False), 429),
            (Fault.insufficient_quota(should_retry=True), 429),
            (Fault.server_error(503, should_retry=False), 503),
            (Fault.server_error(502, html=True, should_retry=True), 502),
            (Fault.latency(0, should_retry=False), 200),
        ],
    )
    def test_should_retry_header(self, emulator: OpenAIEmulator, api: httpx.Client, fault: Fault, status: int) -> None:
        emulator.add_fault(fault)
        response = api.get("/v1/batches")
        assert response.status_code == status
        assert response.headers["x-should-retry"] == str(fault.should_retry).lower()

    def test_latency_delays_a_normal_answer(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.latency(0.3))
        started = time.monotonic()
        response = api.get("/v1/batches")
        assert time.monotonic() - started >= 0.3
        assert response.status_code == 200
        assert emulator.journal[0].fault == "latency"

    def test_hang_outlasts_the_client_timeout(self, emulator: OpenAIEmulator) -> None:
        emulator.add_fault(Fault.hang())
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{emulator.api_base}/batches", timeout=0.3)
        assert (emulator.journal[0].status, emulator.journal[0].fault) == (None, "hang")
        # The server is not stuck: the next call is answered.
        assert httpx.get(f"{emulator.api_base}/batches").status_code == 401

    def test_a_bounded_hang_answers_afterwards(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.hang(0.4))
        with pytest.raises(httpx.ReadTimeout):
            api.get("/v1/batches", timeout=0.1)
        emulator.add_fault(Fault.hang(0.4))
        started = time.monotonic()
        assert api.get("/v1/batches", timeout=5).status_code == 200
        assert time.monotonic() - started >= 0.4

    def test_drop_closes_the_connection_half_way(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        batch = emulator.create_batch()
        emulator.add_fault(Fault.drop(), "POST", CANCEL)
        # The answer is started, then the connection closed: the client gets no answer it can read.
        with pytest.raises(httpx.RemoteProtocolError, match="peer closed connection without sending complete"):
            api.post(f"/v1/batches/{batch['id']}/cancel")
        assert (emulator.journal[0].status, emulator.journal[0].fault) == (None, "drop")
        # Nothing happened to the batch: the request was dropped before it was handled.
        assert emulator.get_batch(str(batch["id"]))["status"] == "in_progress"
        assert api.post(f"/v1/batches/{batch['id']}/cancel").status_code == 200

    @pytest.mark.parametrize(
        ("fault", "error"),
        [
            (Fault.drop(applied=True), httpx.RemoteProtocolError),
            (Fault.hang(applied=True), httpx.ReadTimeout),
        ],
        ids=["drop", "hang"],
    )
    def test_an_applied_fault_acts_then_loses_the_answer(
        self, emulator: OpenAIEmulator, api: httpx.Client, fault: Fault, error: type[Exception]
    ) -> None:
        batch = emulator.create_batch()
        emulator.add_fault(fault, "POST", CANCEL)
        with pytest.raises(error):
            api.post(f"/v1/batches/{batch['id']}/cancel", timeout=0.3)
        entry = emulator.journal[0]
        assert (entry.status, entry.fault, entry.applied) == (None, fault.kind, True)
        assert emulator.get_batch(str(batch["id"]))["status"] == "cancelling"  # the cancel went through

    def test_an_applied_server_error_replaces_the_answer(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        run = emulator.create_thread_run()
        emulator.add_fault(Fault.server_error(502, html=True, applied=True), "POST")
        headers = {"OpenAI-Beta": "assistants=v2"}
        response = api.post(f"/v1/threads/{run['thread_id']}/runs/{run['id']}/cancel", headers=headers)
        assert response.status_code == 502
        assert emulator.get_thread_run(str(run["thread_id"]), str(run["id"]))["status"] == "cancelling"
        assert (emulator.journal[0].status, emulator.journal[0].applied) == (502, True)

    @pytest.mark.parametrize("html", [True, False], ids=["html", "json"])
    def test_an_error_page_can_echo_the_request_headers(
        self, emulator: OpenAIEmulator, api: httpx.Client, html: bool
    ) -> None:
        emulator.add_fault(Fault.server_error(502, html=html, echo_headers=True))
        response = api.get("/v1/batches")
        assert response.status_code == 502
        assert f"Bearer {emulator.api_key}" in response.text
        assert "<redacted>" in str(emulator.journal[0].headers)  # the journal itself never keeps the key

    def test_faults_come_before_authentication(self, emulator: OpenAIEmulator) -> None:
        emulator.add_fault(Fault.server_error(503))
        assert httpx.get(f"{emulator.api_base}/batches").status_code == 503

    def test_admin_endpoints_get_no_faults(self, emulator: OpenAIEmulator) -> None:
        emulator.add_fault(Fault.drop())
        assert httpx.get(f"{emulator.base_url}/_emulator/settings").status_code == 200
        # The fault is still there for the first API call.
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"{emulator.api_base}/batches")
        assert [entry.fault for entry in emulator.journal] == ["drop"]


class TestPlans:
    def test_scripted_faults_hit_exactly_the_next_matching_calls(
        self, emulator: OpenAIEmulator, api: httpx.Client
    ) -> None:
        batch = emulator.create_batch()
        emulator.add_fault(Fault.server_error(502), method="POST", path=CANCEL, times=2)
        statuses = []
        for _ in range(3):
            # Calls that do not match neither get the fault nor use it up.
            assert api.get(f"/v1/batches/{batch['id']}").status_code == 200
            statuses.append(api.post(f"/v1/batches/{batch['id']}/cancel").status_code)
        assert statuses == [502, 502, 200]
        assert [entry.fault for entry in emulator.requests("POST")] == ["server_error", "server_error", None]

    def test_scripted_faults_apply_in_the_order_added(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.server_error(500))
        emulator.add_fault(Fault.insufficient_quota())
        assert [api.get("/v1/batches").status_code for _ in range(3)] == [500, 429, 200]

    def test_path_glob_matches_the_decoded_path_on_every_base(
        self, emulator: OpenAIEmulator, api: httpx.Client
    ) -> None:
        emulator.add_fault(Fault.server_error(500), path="*/batches/a b/cancel", times=2)
        emulator.create_batch(batch_id="a b")
        assert api.post("/v1/batches/a%20b/cancel").status_code == 500
        assert api.post("/openai/v1/batches/a%20b/cancel").status_code == 500
        assert api.post("/v1/batches/a%20b/cancel").status_code == 200

    def test_random_faults_are_reproducible_with_a_seed(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        faults = [Fault.server_error(500), Fault.rate_limit(retry_after=1), Fault.server_error(503)]

        def statuses() -> list[int]:
            emulator.set_random_faults(rate=0.5, seed=42, faults=faults, method="GET")
            return [api.get("/v1/batches").status_code for _ in range(40)]

        first = statuses()
        assert first == statuses()
        assert {200, 500, 429, 503} == set(first)
        emulator.set_random_faults(rate=0.5, seed=7, faults=faults, method="GET")
        assert [api.get("/v1/batches").status_code for _ in range(40)] != first

    def test_random_faults_only_for_matching_requests(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.set_random_faults(rate=1, seed=1, faults=[Fault.server_error(500)], path=CANCEL)
        emulator.create_batch(batch_id="b")
        assert api.get("/v1/batches/b").status_code == 200
        assert api.post("/v1/batches/b/cancel").status_code == 500

    def test_scripted_faults_go_before_random_ones(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.set_random_faults(rate=1, seed=1, faults=[Fault.server_error(500)])
        emulator.add_fault(Fault.insufficient_quota())
        assert [api.get("/v1/batches").status_code for _ in range(2)] == [429, 500]

    def test_clearing_and_rate_zero_stop_faults(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.drop(), times=5)
        emulator.set_random_faults(rate=1, seed=1, faults=[Fault.server_error(500)])
        emulator.clear_faults()
        assert api.get("/v1/batches").status_code == 200
        emulator.set_random_faults(rate=1, seed=1, faults=[Fault.server_error(500)])
        emulator.set_random_faults(rate=0)
        assert api.get("/v1/batches").status_code == 200

    def test_reset_clears_faults(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        emulator.add_fault(Fault.server_error(500))
        emulator.reset()
        assert api.get("/v1/batches").status_code == 200

    def test_a_fault_lets_the_first_matching_requests_through_when_told(self) -> None:
        plan = FaultPlan()
        plan.add(Fault.server_error(502), "GET", "/v1/batches", times=2, skip=1)
        assert plan.pick("GET", "/v1/batches") is None  # the list's first page
        assert plan.pick("GET", "/v1/batches/batch_1") is None  # no match: not counted
        assert [plan.pick("GET", "/v1/batches") for _ in range(3)] == [Fault.server_error(502)] * 2 + [None]

    def test_plan_rejects_bad_arguments(self) -> None:
        plan = FaultPlan()
        with pytest.raises(ValueError, match="times"):
            plan.add(Fault.drop(), times=0)
        with pytest.raises(ValueError, match="skip"):
            plan.add(Fault.drop(), skip=-1)
        with pytest.raises(ValueError, match="rate"):
            plan.set_random(1.5, 1, [Fault.drop()])
        with pytest.raises(ValueError, match="at least one fault"):
            plan.set_random(0.5, 1, [])


class TestFaultValues:
    @pytest.mark.parametrize(
        "fault",
        [
            Fault.rate_limit(retry_after=1.5, retry_after_ms=1500, should_retry=True),
            Fault.rate_limit(retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
            Fault.insufficient_quota(should_retry=False),
            Fault.server_error(502, html=True),
            Fault.answer(200, "<html/>", content_type="text/html", should_retry=False),
            Fault.answer(400),
            Fault.latency(0.25),
            Fault.hang(),
            Fault.hang(30),
            Fault.drop(),
            Fault.drop(applied=True),
            Fault.hang(5, applied=True),
            Fault.server_error(502, html=True, applied=True, echo_headers=True),
        ],
    )
    def test_json_round_trip(self, fault: Fault) -> None:
        assert Fault.from_json(fault.to_json()) == fault

    def test_to_json_keeps_should_retry_false(self) -> None:
        assert Fault.server_error(503, should_retry=False).to_json() == {
            "kind": "server_error",
            "status": 503,
            "should_retry": False,
        }

    @pytest.mark.parametrize(
        ("data", "match"),
        [
            ({"kind": "teapot"}, "Unknown fault kind"),
            ({}, "needs a 'kind'"),
            ({"kind": "server_error", "status": 404}, "5xx"),
            ({"kind": "server_error"}, "5xx"),
            ({"kind": "latency"}, "Latency"),
            ({"kind": "hang", "seconds": -1}, "hang"),
            ({"kind": "drop", "colour": "red"}, "Unknown fault option"),
            ({"kind": "rate_limit", "retry_after": [1]}, "number"),
            ({"kind": "rate_limit", "retry_after_ms": 1.5}, "whole"),
            ({"kind": "rate_limit", "should_retry": "yes"}, "true or false"),
            ({"kind": "latency", "seconds": True}, "number"),
            ({"kind": "answer"}, "status from 200 to 599"),
            ({"kind": "answer", "status": 99}, "status from 200 to 599"),
            ({"kind": "answer", "status": 200, "body": {"id": 1}}, "text"),
            ({"kind": "latency", "seconds": 1, "applied": True}, "cannot be applied"),
            ({"kind": "answer", "status": 400, "echo_headers": True}, "echoes"),
            ({"kind": "drop", "applied": 1}, "true or false"),
        ],
    )
    def test_from_json_rejects_bad_faults(self, data: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            Fault.from_json(data)

    def test_only_error_faults_answer_by_themselves(self) -> None:
        with pytest.raises(ValueError, match="does not answer"):
            Fault.latency(1).reply()
