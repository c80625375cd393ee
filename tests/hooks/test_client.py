"""The synchronous client: keep-alive, close(), timeouts, create_batch and test_connection()."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.exceptions import PSOpenAITransportError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import Fault
from tests.connections import conn_json, set_connection, use_emulator
from tests.ports import free_port

if TYPE_CHECKING:
    from airflow_psopenai.testing import OpenAIEmulator

pytestmark = pytest.mark.timeout(30)


def tcp_connects(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for record in caplog.records if record.getMessage().startswith("connect_tcp.started"))


def test_sync_calls_reuse_one_client_and_one_connection(
    emulator: OpenAIEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="httpcore")
    batch = emulator.create_batch()
    run = emulator.create_thread_run()
    hook = PSOpenAIHook()
    client = hook.client
    hook.get_batch(batch["id"])
    hook.cancel_batch(batch["id"])
    hook.get_thread_run(run["thread_id"], run["id"])
    hook.get_batch(batch["id"])
    assert hook.client is client
    assert len(emulator.journal) == 4
    assert tcp_connects(caplog) == 1  # keep-alive: one TCP connection for the four calls


def test_close_closes_the_client_and_a_later_call_opens_a_new_one(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    hook = PSOpenAIHook()
    hook.get_batch(batch["id"])
    client = hook.client
    hook.close()
    assert client.is_closed
    hook.close()  # a second close is harmless
    assert hook.get_batch(batch["id"])["id"] == batch["id"]
    assert hook.client is not client
    assert not hook.client.is_closed


def test_close_without_a_call_opens_nothing(emulator: OpenAIEmulator) -> None:
    hook = PSOpenAIHook()
    hook.close()
    assert "client" not in hook.__dict__


def test_timeout_sec_is_honoured(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.hang(5))
    started = time.monotonic()
    with pytest.raises(PSOpenAITransportError) as raised:
        PSOpenAIHook(timeout_sec=0.5).get_batch("batch_1")
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 3  # not the 5 s hang
    assert "timed out" in str(raised.value)
    assert "timeout_sec=0.5" in str(raised.value)
    assert "batch 'batch_1'" in str(raised.value)
    [entry] = emulator.journal
    assert entry.status is None  # no answer was waited for


def test_timeout_is_retried_like_a_transport_error(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.hang(5))
    assert PSOpenAIHook(timeout_sec=1, max_retry_count=1).get_batch(batch["id"])["id"] == batch["id"]
    assert [entry.status for entry in emulator.journal] == [None, 200]


def test_timeout_sec_0_waits_for_a_slow_answer(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.latency(0.6))
    hook = PSOpenAIHook(timeout_sec=0)
    assert hook.get_batch(batch["id"])["id"] == batch["id"]
    assert hook.client.timeout.read is None
    assert hook.client.timeout.connect == 10.0


def test_create_batch_posts_the_body(emulator: OpenAIEmulator) -> None:
    created = PSOpenAIHook().create_batch("file-abc", metadata={"owner": "dag_1"})
    assert created["input_file_id"] == "file-abc"
    assert created["endpoint"] == "/v1/chat/completions"
    assert created["completion_window"] == "24h"
    # Outside a task: the deployment tag and the create's nonce, with the caller's keys.
    assert created["metadata"].pop("airflow_create_nonce")
    assert created["metadata"] == {"airflow_deployment": "default", "owner": "dag_1"}
    entry, look = emulator.journal
    assert (entry.method, entry.path, entry.status) == ("POST", "/v1/batches", 200)
    assert (look.method, look.path) == ("GET", "/v1/batches")  # the look for a duplicate: the newest page
    assert emulator.get_batch(str(created["id"]))["status"] == "in_progress"


# -- test_connection ---------------------------------------------------------------------------------------


def test_test_connection_succeeds_against_the_emulator(emulator: OpenAIEmulator) -> None:
    ok, message = PSOpenAIHook().test_connection()
    assert ok is True
    assert emulator.api_base in message
    assert "psopenai_default" in message
    [entry] = emulator.journal
    assert (entry.method, entry.path, entry.query, entry.status) == ("GET", "/v1/batches", {"limit": "1"}, 200)


def test_test_connection_reports_a_refused_key(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-0123456789abcdefghij"
    use_emulator(monkeypatch, openai_emulator, conn_id="bad_key", password=wrong)
    ok, message = PSOpenAIHook("bad_key").test_connection()
    assert ok is False
    assert "The API key of connection 'bad_key' was refused" in message
    assert "HTTP 401" in message
    assert wrong not in message


def test_test_connection_returns_false_for_an_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "psopenai_default", conn_json(f"http://127.0.0.1:{free_port()}/v1", "sk-unreachable"))
    ok, message = PSOpenAIHook().test_connection()
    assert ok is False
    assert "refused" in message.lower()


def test_test_connection_names_the_unreachable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # Like every other call (transport_error), the message must say which server could not be reached.
    port = free_port()
    set_connection(monkeypatch, "psopenai_default", conn_json(f"http://127.0.0.1:{port}/v1", "sk-unreachable"))
    ok, message = PSOpenAIHook().test_connection()
    assert ok is False
    assert f"http://127.0.0.1:{port}/v1" in message
    assert "ConnectError" in message


def test_test_connection_reports_a_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "no_key", conn_json("http://127.0.0.1:9/v1"))
    ok, message = PSOpenAIHook("no_key").test_connection()
    assert ok is False
    assert "No API key" in message


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"api_type": "gcp"}, "api_type"),
        ({"auth_type": "basic"}, "auth_type"),
        ({"timeout_sec": "soon"}, "timeout_sec"),
        ({"max_retry_count": 500}, "max_retry_count"),
    ],
)
def test_test_connection_returns_false_for_bad_extras(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, extra: dict[str, object], named: str
) -> None:
    use_emulator(monkeypatch, openai_emulator, **extra)
    ok, message = PSOpenAIHook().test_connection()
    assert ok is False
    assert named in message
    assert openai_emulator.journal == []


def test_test_connection_on_azure(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(
        monkeypatch, "psopenai_default", conn_json(openai_emulator.base_url, openai_emulator.api_key, api_type="azure")
    )
    ok, _ = PSOpenAIHook().test_connection()
    assert ok is True
    [entry] = openai_emulator.journal
    assert entry.raw_target == "/openai/batches?api-version=2025-04-01-preview&limit=1"
