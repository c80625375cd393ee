"""create_batch behind a gateway that sends a create twice (its first answer lost upstream): the duplicate is
cancelled right after the answer, and the batch returned is left running.

The gateway is a real HTTP server on 127.0.0.1 in front of the emulator: it forwards every request, and a
``POST /v1/batches`` twice, answering with the second answer, as a proxy that retried does.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.run_tags import CREATE_NONCE_KEY, DEPLOYMENT_KEY, MAX_PAIRS, PROVIDER_KEYS
from tests.connections import conn_json, set_connection

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_psopenai.testing import OpenAIEmulator


class RetryingGateway:
    """Forwards to ``upstream``; sends each create ``copies`` times and answers with the last answer."""

    def __init__(self, upstream: str, copies: int = 2) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                gateway.forward(self, "GET")

            def do_POST(self) -> None:
                gateway.forward(self, "POST")

        self.upstream = upstream.rstrip("/")
        self.copies = copies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = handler.rfile.read(int(handler.headers.get("content-length") or 0))
        headers = {name: value for name, value in handler.headers.items() if name.lower() in ("authorization",)}
        headers["content-type"] = "application/json"
        url = self.upstream + handler.path.removeprefix("/v1")
        sends = self.copies if method == "POST" and handler.path.rstrip("/") == "/v1/batches" else 1
        for _ in range(sends):
            answer = httpx.request(method, url, content=body or None, headers=headers, timeout=10)
        handler.send_response(answer.status_code)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(answer.content)))
        handler.end_headers()
        handler.wfile.write(answer.content)

    def __enter__(self) -> RetryingGateway:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[RetryingGateway]:
    with RetryingGateway(openai_emulator.api_base) as retrying:
        set_connection(monkeypatch, "psopenai_default", conn_json(retrying.api_base, openai_emulator.api_key))
        yield retrying


def batches_of(emulator: OpenAIEmulator) -> list[dict[str, Any]]:
    return list(httpx.get(f"{emulator.api_base}/batches?limit=100", headers=auth(emulator)).json()["data"])


def auth(emulator: OpenAIEmulator) -> dict[str, str]:
    return {"authorization": f"Bearer {emulator.api_key}"}


@pytest.mark.server
def test_a_create_sent_twice_by_a_gateway_leaves_one_batch_running(
    openai_emulator: OpenAIEmulator, gateway: RetryingGateway
) -> None:
    openai_emulator.create_batch(metadata={"team": "search"})  # another batch of the account: left alone
    hook = PSOpenAIHook()
    try:
        created = hook.create_batch("file-a", metadata={"team": "search"})
    finally:
        hook.close()
    twins = [b for b in batches_of(openai_emulator) if (b.get("metadata") or {}).get(CREATE_NONCE_KEY)]
    assert len(twins) == 2
    statuses = {b["id"]: b["status"] for b in twins}
    assert statuses.pop(created["id"]) == "in_progress"
    assert list(statuses.values()) == ["cancelling"]
    assert len(openai_emulator.requests(method="POST", path="*/cancel")) == 1
    assert created["metadata"][DEPLOYMENT_KEY] == "default"


@pytest.mark.server
def test_a_create_answered_once_sends_no_cancel(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, "psopenai_default", conn_json(openai_emulator.api_base, openai_emulator.api_key))
    hook = PSOpenAIHook()
    try:
        first, second = hook.create_batch("file-a"), hook.create_batch("file-a")
    finally:
        hook.close()
    assert first["metadata"][CREATE_NONCE_KEY] != second["metadata"][CREATE_NONCE_KEY]
    assert openai_emulator.requests(method="POST", path="*/cancel") == []
    assert len(openai_emulator.requests(method="GET", path="/v1/batches")) == 2  # one page per create


@pytest.mark.unit
def test_the_provider_leaves_ten_metadata_pairs_for_users() -> None:
    assert MAX_PAIRS - len(PROVIDER_KEYS) == 10
