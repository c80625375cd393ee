"""HTTP behaviour: authentication, the three API bases, headers, path decoding, the journal, life cycle."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from urllib.parse import quote

import httpx
import pytest

from airflow_psopenai.resources import ASSISTANTS_BETA_HEADERS as BETA
from airflow_psopenai.resources import BATCH, THREAD_RUN
from airflow_psopenai.testing import ManualClock, OpenAIEmulator
from airflow_psopenai.testing.api import mask_key


def raw_exchange(emulator: OpenAIEmulator, data: bytes, responses: int) -> bytes:
    """Send ``data`` on one socket and return what came back once ``responses`` answers arrived."""
    host, port = emulator.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while received.count(b"HTTP/1.1 ") < responses or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


class TestAuthentication:
    def test_missing_key_is_401(self, emulator: OpenAIEmulator) -> None:
        batch = emulator.create_batch()
        response = httpx.get(f"{emulator.api_base}/batches/{batch['id']}")
        assert response.status_code == 401
        assert response.json()["error"]["message"].startswith("You didn't provide an API key.")

    def test_wrong_key_is_401_with_the_key_masked(self, emulator: OpenAIEmulator) -> None:
        wrong = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
        response = httpx.get(f"{emulator.api_base}/batches", headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("Incorrect API key provided: sk-*")
        assert "0123." in error["message"]
        assert wrong not in response.text
        assert "proj-abc" not in response.text

    @pytest.mark.parametrize(("key", "masked"), [("sk-emulator-key", "sk-********-key"), ("short", "*****"), ("", "")])
    def test_mask_shows_at_most_three_and_four_characters(self, key: str, masked: str) -> None:
        assert mask_key(key) == masked

    @pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
    def test_bearer_key_is_accepted(self, emulator: OpenAIEmulator, scheme: str) -> None:
        response = httpx.get(f"{emulator.api_base}/batches", headers={"Authorization": f"{scheme} {emulator.api_key}"})
        assert response.status_code == 200

    def test_api_key_header_is_accepted(self, emulator: OpenAIEmulator) -> None:
        response = httpx.get(f"{emulator.api_base}/batches", headers={"api-key": emulator.api_key})
        assert response.status_code == 200

    def test_wrong_api_key_header_is_401(self, emulator: OpenAIEmulator) -> None:
        response = httpx.get(f"{emulator.api_base}/batches", headers={"api-key": "not-the-key-at-all"})
        assert response.status_code == 401


class TestBases:
    def test_azure_dated_api_needs_an_api_version(self, emulator: OpenAIEmulator) -> None:
        batch = emulator.create_batch()
        headers = {"api-key": emulator.api_key}
        url = f"{emulator.base_url}/openai/batches/{batch['id']}"
        assert httpx.get(url, params={"api-version": "2024-10-21"}, headers=headers).json() == batch
        missing = httpx.get(url, headers=headers)
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "Resource not found"

    def test_azure_v1_api_needs_no_api_version(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        batch = emulator.create_batch()
        cancelled = api.post(f"/openai/v1/batches/{batch['id']}/cancel", headers={"api-key": emulator.api_key})
        assert cancelled.json()["status"] == "cancelling"

    @pytest.mark.parametrize("base", ["/v1", "/openai/v1", "/openai"])
    def test_every_base_serves_every_resource(self, emulator: OpenAIEmulator, api: httpx.Client, base: str) -> None:
        params = {"api-version": "2025-04-01-preview"} if base == "/openai" else {}
        batch, run, response = emulator.create_batch(), emulator.create_thread_run(), emulator.create_response()
        paths = [
            BATCH.cancel_path({"batch_id": str(batch["id"])}),
            THREAD_RUN.cancel_path({"thread_id": str(run["thread_id"]), "run_id": str(run["id"])}),
            f"/responses/{response['id']}/cancel",
        ]
        for path in paths:
            answer = api.post(base + path, params=params, headers=BETA)
            assert answer.status_code == 200, answer.text
        assert [entry.path for entry in emulator.journal] == [base + path for path in paths]

    @pytest.mark.parametrize(
        ("method", "path"),
        [("GET", "/v1/files"), ("DELETE", "/v1/batches/b"), ("GET", "/v1/batches/b/cancel"), ("GET", "/v1")],
    )
    def test_unknown_routes_are_404_invalid_url(self, api: httpx.Client, method: str, path: str) -> None:
        response = api.request(method, path)
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"Invalid URL ({method} {path})"

    def test_paths_outside_the_api_are_404(self, emulator: OpenAIEmulator) -> None:
        assert httpx.get(f"{emulator.base_url}/").status_code == 404
        assert httpx.get(f"{emulator.base_url}/v2/batches").status_code == 404
        assert emulator.journal == []


class TestBetaHeader:
    def test_missing_beta_header_is_400(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        run = emulator.create_thread_run()
        for response in (
            api.get(f"/v1/threads/{run['thread_id']}/runs/{run['id']}"),
            api.post(f"/v1/threads/{run['thread_id']}/runs/{run['id']}/cancel"),
        ):
            assert response.status_code == 400
            assert response.json()["error"] == {
                "message": "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
                "Please try again by setting the header 'OpenAI-Beta: assistants=v2'.",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_beta",
            }
        assert emulator.get_thread_run(str(run["thread_id"]), str(run["id"]))["status"] == "in_progress"

    def test_old_beta_version_is_400(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        run = emulator.create_thread_run()
        response = api.get(f"/v1/threads/{run['thread_id']}/runs/{run['id']}", headers={"OpenAI-Beta": "assistants=v1"})
        assert response.status_code == 400
        assert "v1 Assistants API has been deprecated" in response.json()["error"]["message"]

    def test_beta_header_among_others_is_accepted(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        run = emulator.create_thread_run()
        headers = {"OpenAI-Beta": "realtime=v1, assistants=v2"}
        assert api.get(f"/v1/threads/{run['thread_id']}/runs/{run['id']}", headers=headers).status_code == 200


class TestPathDecoding:
    @pytest.mark.parametrize("odd_id", ["a/b", "a?b=c", "a#b", "..", "../../responses/x", "b c%d", "é"])
    def test_an_encoded_id_is_looked_up_literally(
        self, emulator: OpenAIEmulator, api: httpx.Client, odd_id: str
    ) -> None:
        batch = emulator.create_batch(batch_id=odd_id)
        # quote() leaves dots alone, and clients resolve a bare ".." segment before sending.
        encoded = quote(odd_id, safe="").replace(".", "%2E")
        assert api.get(f"/v1/batches/{encoded}").json() == batch
        assert api.post(f"/v1/batches/{encoded}/cancel").json()["status"] == "cancelling"
        entry = emulator.journal[0]
        assert entry.raw_target == f"/v1/batches/{encoded}"
        assert entry.path == f"/v1/batches/{odd_id}"

    @pytest.mark.parametrize(
        ("encoded", "literal"),
        [
            ("b%2Fcancel", "b/cancel"),
            ("..%2F..%2Fv1%2Ffiles", "../../v1/files"),
            ("%2E%2E", ".."),
            ("b%3Fx%3D1", "b?x=1"),
            ("b%23f", "b#f"),
        ],
    )
    def test_an_unknown_encoded_id_is_404_not_another_route(
        self, emulator: OpenAIEmulator, api: httpx.Client, encoded: str, literal: str
    ) -> None:
        emulator.create_batch(batch_id="b")
        response = api.post(f"/v1/batches/{encoded}/cancel")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == f"No batch found with id '{literal}'."
        assert emulator.get_batch("b")["status"] == "in_progress"

    def test_encoded_thread_and_run_ids(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        run = emulator.create_thread_run(thread_id="t/1", run_id="r?2")
        path = THREAD_RUN.path({"thread_id": "t/1", "run_id": "r?2"})
        assert api.get("/v1" + path, headers=BETA).json() == run


class TestHeadersAndConnections:
    def test_every_answer_has_a_request_id_and_json(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        ids = set()
        for response in (api.get("/v1/batches"), api.get("/v1/batches/none"), httpx.get(emulator.base_url + "/x")):
            assert re.fullmatch(r"req_[0-9a-f]{32}", response.headers["x-request-id"])
            assert response.headers["content-type"] == "application/json"
            ids.add(response.headers["x-request-id"])
        assert len(ids) == 3

    def test_keep_alive_and_pipelining_on_one_connection(self, emulator: OpenAIEmulator) -> None:
        batch = emulator.create_batch()
        request = (
            f"GET /v1/batches/{batch['id']} HTTP/1.1\r\nHost: emulator\r\n"
            f"Authorization: Bearer {emulator.api_key}\r\n\r\n"
        ).encode()
        received = raw_exchange(emulator, request * 3, responses=3)
        assert received.count(b"HTTP/1.1 200 ") == 3

    def test_connection_close_is_honoured(self, emulator: OpenAIEmulator) -> None:
        request = b"GET /v1/batches HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\r\n"
        received = raw_exchange(emulator, request * 2, responses=2)
        assert received.count(b"HTTP/1.1 401 ") == 1

    def test_malformed_request_is_400(self, emulator: OpenAIEmulator) -> None:
        received = raw_exchange(emulator, b"NOT HTTP AT ALL\r\n\r\n", responses=1)
        assert received.startswith(b"HTTP/1.1 400 ")


class TestJournal:
    def test_entries_redact_credentials_and_keep_the_raw_target(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        api.get("/v1/batches", params={"limit": "2", "after": "a/b"}, headers={"X-Trace": "t1"})
        httpx.get(f"{emulator.base_url}/openai/v1/batches", headers={"api-key": emulator.api_key})
        first, second = emulator.journal
        assert first.method == "GET"
        assert first.path == "/v1/batches"
        assert first.raw_target == "/v1/batches?limit=2&after=a%2Fb"
        assert first.query == {"limit": "2", "after": "a/b"}
        assert first.headers["authorization"] == "<redacted>"
        assert first.headers["x-trace"] == "t1"
        assert (first.time, first.status, first.fault) == (clock(), 200, None)
        assert second.headers["api-key"] == "<redacted>"
        assert emulator.api_key not in repr(emulator.journal)

    def test_requests_filter_by_method_and_path_glob(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        batch = emulator.create_batch()
        api.get(f"/v1/batches/{batch['id']}")
        api.post(f"/v1/batches/{batch['id']}/cancel")
        api.get("/v1/batches")
        assert [entry.path for entry in emulator.requests("post")] == [f"/v1/batches/{batch['id']}/cancel"]
        assert len(emulator.requests(path="/v1/batches/*")) == 2
        assert len(emulator.requests("GET", "/v1/batches/*")) == 1
        assert len(emulator.requests()) == 3

    def test_reset_clears_the_journal(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        api.get("/v1/batches")
        emulator.reset()
        assert emulator.journal == []


class TestLifeCycle:
    def test_stop_frees_the_port_and_joins_the_thread(self) -> None:
        emulator = OpenAIEmulator().start()
        port = int(emulator.base_url.rsplit(":", 1)[1])
        emulator.stop()
        assert not [thread for thread in threading.enumerate() if thread.name.startswith("openai-emulator")]
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
        with pytest.raises(RuntimeError, match="not running"):
            _ = emulator.api_base

    def test_start_twice_is_an_error_and_restart_works(self) -> None:
        with OpenAIEmulator() as emulator, pytest.raises(RuntimeError, match="already running"):
            emulator.start()
        with emulator:
            assert httpx.get(f"{emulator.api_base}/batches").status_code == 401

    def test_start_reports_a_port_in_use(self) -> None:
        with OpenAIEmulator() as running:
            port = int(running.base_url.rsplit(":", 1)[1])
            with pytest.raises(OSError):
                OpenAIEmulator(port=port).start()

    def test_restart_on_the_same_port_while_a_client_holds_a_keep_alive_connection(self) -> None:
        first = OpenAIEmulator().start()
        port = int(first.base_url.rsplit(":", 1)[1])
        with httpx.Client() as client:
            assert client.get(f"{first.api_base}/batches").status_code == 401  # the connection stays open
            first.stop()  # the emulator closes its side first, which leaves it in TIME_WAIT
            with OpenAIEmulator(port=port) as second:
                assert httpx.get(f"{second.api_base}/batches").status_code == 401

    def test_stop_is_clean_with_open_idle_and_hanging_connections(self) -> None:
        # A separate interpreter in development mode turns any unawaited task or unclosed socket into output.
        script = textwrap.dedent(
            """
            import socket, time, warnings, httpx
            from airflow_psopenai.testing import Fault, OpenAIEmulator
            warnings.simplefilter("error")
            emulator = OpenAIEmulator().start()
            idle = httpx.Client()
            idle.get(emulator.api_base + "/batches")
            emulator.add_fault(Fault.hang())
            host, port = emulator.base_url.removeprefix("http://").rsplit(":", 1)
            hanging = socket.create_connection((host, int(port)))
            hanging.sendall(b"GET /v1/batches HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
            waited = time.monotonic()
            while len(emulator.journal) < 2:  # the emulator has read the request, and holds it
                assert time.monotonic() - waited < 10
                time.sleep(0.02)
            started = time.monotonic()
            emulator.stop()
            assert time.monotonic() - started < 2
            assert hanging.recv(100) == b""
            hanging.close()
            idle.close()
            print("stopped")
            """
        )
        result = subprocess.run(
            [sys.executable, "-X", "dev", "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "stopped\n", "")

    def test_ipv6_host_is_bracketed(self) -> None:
        with OpenAIEmulator(host="::1") as emulator:
            assert emulator.base_url.startswith("http://[::1]:")
            assert httpx.get(f"{emulator.api_base}/batches").status_code == 401


class TestLatency:
    def test_latency_delays_answers_without_blocking_the_server(self, openai_emulator: OpenAIEmulator) -> None:
        openai_emulator.latency = 1.0
        results: list[float] = []

        def call() -> None:
            started = time.monotonic()
            httpx.get(f"{openai_emulator.api_base}/batches", timeout=10)
            results.append(time.monotonic() - started)

        started = time.monotonic()
        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 5
        assert min(results) >= 1.0
        # Five answers held back at once take about one latency, not five.
        assert time.monotonic() - started < 3.0
        # Admin endpoints are not slowed down.
        openai_emulator.latency = 5.0
        started = time.monotonic()
        httpx.get(f"{openai_emulator.base_url}/_emulator/settings", timeout=10)
        assert time.monotonic() - started < 3.0
