"""What the hook raises for each kind of failure, and that the API key never shows in errors or logs."""

from __future__ import annotations

import json
import logging
import traceback
from typing import TYPE_CHECKING

import httpx
import pytest

from airflow_psopenai.exceptions import (
    PSOpenAIAPIError,
    PSOpenAIAssistantsShutdownError,
    PSOpenAIAuthenticationError,
    PSOpenAICannotCancelError,
    PSOpenAIInvalidResponseError,
    PSOpenAINotFoundError,
    PSOpenAIQuotaError,
    PSOpenAIServerError,
    PSOpenAITransportError,
)
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import Fault, OpenAIEmulator
from tests.connections import unique_key, use_emulator

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(30)

# -- messages against the emulator ---------------------------------------------------------------------------


def test_401_names_the_connection_and_carries_the_request_id(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_emulator(monkeypatch, openai_emulator, conn_id="team_openai", password="sk-wrong-0123456789abcdef")
    with pytest.raises(PSOpenAIAuthenticationError) as raised:
        PSOpenAIHook("team_openai").get_batch("batch_1")
    error = raised.value
    assert "'team_openai'" in str(error)
    assert "refused" in str(error)
    assert error.http_status == 401
    assert error.code == "invalid_api_key"
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert error.request_id in str(error)


def test_404_names_the_id(emulator: OpenAIEmulator) -> None:
    with pytest.raises(PSOpenAINotFoundError) as raised:
        PSOpenAIHook().get_batch("batch_nowhere_42")
    error = raised.value
    assert not isinstance(error, PSOpenAIAssistantsShutdownError)
    assert "batch 'batch_nowhere_42'" in str(error)
    assert error.api_message == "No batch found with id 'batch_nowhere_42'."
    assert error.http_status == 404
    assert error.request_id is not None
    assert error.request_id in str(error)


def test_thread_run_404_on_another_server_is_a_plain_not_found(emulator: OpenAIEmulator) -> None:
    with pytest.raises(PSOpenAINotFoundError) as raised:
        PSOpenAIHook().get_thread_run("thread_x", "run_y")
    assert not isinstance(raised.value, PSOpenAIAssistantsShutdownError)
    assert "run 'run_y' of thread 'thread_x'" in str(raised.value)


def test_quota_says_retrying_cannot_help(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.insufficient_quota())
    with pytest.raises(PSOpenAIQuotaError) as raised:
        PSOpenAIHook(max_retry_count=3).get_batch("batch_1")
    error = raised.value
    assert "Retrying cannot help" in str(error)
    assert "psopenai_default" in str(error)
    assert (error.http_status, error.code, error.retryable) == (429, "insufficient_quota", False)


def test_html_502_is_a_clear_message_about_a_non_json_body(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.server_error(502, html=True))
    with pytest.raises(PSOpenAIServerError) as raised:
        PSOpenAIHook().get_batch("batch_1")
    error = raised.value
    message = str(error)
    assert "text/html" in message
    assert "not OpenAI's JSON" in message
    assert "<html>" not in message
    assert error.http_status == 502
    assert error.api_message is None
    assert error.request_id is not None
    assert f"request id {error.request_id}" in message


def test_batch_cancel_409_is_cannot_cancel_with_the_status(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch(status="completed")
    with pytest.raises(PSOpenAICannotCancelError) as raised:
        PSOpenAIHook().cancel_batch(batch["id"])
    error = raised.value
    assert error.status == "completed"
    assert error.ids == {"batch_id": batch["id"]}
    assert error.api_error is not None
    assert error.api_error.http_status == 409
    assert error.api_error.request_id is not None
    assert error.api_error.request_id in str(error)
    assert batch["id"] in str(error)


@pytest.mark.parametrize("status", ["completed", "cancelled", "cancelling", "failed", "expired", "incomplete"])
def test_run_cancel_400_is_cannot_cancel_with_the_runs_status(emulator: OpenAIEmulator, status: str) -> None:
    emulator.cancel_delay = 60  # a run made `cancelling` stays so until the cancel, however slow the machine
    run = emulator.create_thread_run(status=status)
    with pytest.raises(PSOpenAICannotCancelError) as raised:
        PSOpenAIHook().cancel_thread_run(run["thread_id"], run["id"])
    assert raised.value.status == status
    assert raised.value.ids == {"thread_id": run["thread_id"], "run_id": run["id"]}
    assert raised.value.api_error is not None
    assert raised.value.api_error.http_status == 400


def error_json(message: str, code: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})


def test_other_400_on_cancel_is_not_cannot_cancel(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.answer(400, error_json("Invalid 'run_id'.", code="invalid_value")))
    with pytest.raises(PSOpenAIAPIError) as raised:
        PSOpenAIHook().cancel_thread_run("thread_1", "run_1")
    assert not isinstance(raised.value, PSOpenAICannotCancelError)
    assert raised.value.code == "invalid_value"
    assert "Invalid 'run_id'" in str(raised.value)


def test_capitalised_status_in_a_refusal_is_normalised(emulator: OpenAIEmulator) -> None:
    """Older Azure answers capitalise statuses."""
    emulator.add_fault(Fault.answer(409, error_json("Cannot cancel a batch with status 'Completed'.")))
    with pytest.raises(PSOpenAICannotCancelError) as raised:
        PSOpenAIHook().cancel_batch("batch_1")
    assert raised.value.status == "completed"


# -- odd answers, from the emulator's answer fault ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("<html>ok</html>", "text/html"), ("", None), ('["not", "an", "object"]', None), ("{truncated", None)],
    ids=["html", "empty", "json-list", "broken-json"],
)
def test_2xx_that_is_not_a_json_object_is_an_invalid_response(
    emulator: OpenAIEmulator, body: str, content_type: str | None
) -> None:
    emulator.add_fault(Fault.answer(200, body, content_type=content_type), times=5)
    with pytest.raises(PSOpenAIInvalidResponseError) as raised:
        PSOpenAIHook(max_retry_count=3).get_batch("batch_1")
    assert raised.value.http_status == 200
    assert raised.value.request_id is not None
    assert raised.value.request_id.startswith("req_")
    assert "batch 'batch_1'" in str(raised.value)
    assert len(emulator.journal) == 1  # not retried: the server answered


def test_empty_error_body_is_a_clear_message(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.answer(400))
    with pytest.raises(PSOpenAIInvalidResponseError) as raised:
        PSOpenAIHook().get_batch("batch_1")
    assert "an empty body" in str(raised.value)
    assert f"request id {raised.value.request_id})" in str(raised.value)


def test_request_id_header_is_on_the_exception(emulator: OpenAIEmulator) -> None:
    with pytest.raises(PSOpenAINotFoundError) as raised:
        PSOpenAIHook().get_batch("batch_1")
    request_id = raised.value.request_id
    assert request_id is not None
    assert request_id.startswith("req_")
    assert str(raised.value).endswith(f"(HTTP 404, request id {request_id})")


@pytest.fixture
def api_openai_com_through_a_proxy(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> PSOpenAIHook:
    """Return a hook for http://api.openai.com/v1 whose requests reach the emulator as their proxy."""
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", emulator.base_url)
    return PSOpenAIHook(api_base="http://api.openai.com/v1")


@pytest.mark.parametrize("call", ["get", "cancel"])
def test_thread_run_404_on_api_openai_com_explains_the_assistants_shutdown(
    emulator: OpenAIEmulator, api_openai_com_through_a_proxy: PSOpenAIHook, call: str
) -> None:
    hook = api_openai_com_through_a_proxy
    method = hook.get_thread_run if call == "get" else hook.cancel_thread_run
    with pytest.raises(PSOpenAIAssistantsShutdownError) as raised:
        method("thread_1", "run_1")
    message = str(raised.value)
    assert "2026-08-26" in message
    assert "Responses API" in message
    assert "run 'run_1' of thread 'thread_1'" in message
    assert raised.value.request_id is not None
    assert emulator.journal[0].raw_target.startswith("http://api.openai.com/v1/threads/thread_1/runs/run_1")


def test_batch_404_on_api_openai_com_is_a_plain_not_found(api_openai_com_through_a_proxy: PSOpenAIHook) -> None:
    with pytest.raises(PSOpenAINotFoundError) as raised:
        api_openai_com_through_a_proxy.get_batch("batch_1")
    assert not isinstance(raised.value, PSOpenAIAssistantsShutdownError)
    assert "2026-08-26" not in str(raised.value)


# -- the key never shows -----------------------------------------------------------------------------------------


@pytest.fixture
def secret_emulator() -> Iterator[OpenAIEmulator]:
    """Yield an emulator whose key no other test uses."""
    with OpenAIEmulator(api_key=unique_key(), cancel_delay=0.2) as emulator:
        yield emulator


def debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    """Capture every logger at DEBUG, httpx's and httpcore's included."""
    for name in (None, "httpx", "httpcore", "airflow_psopenai", "airflow.task"):
        caplog.set_level(logging.DEBUG, logger=name)


def everything_said(error: BaseException, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> str:
    out, err = capfd.readouterr()
    return "\n".join([str(error), repr(error), "".join(traceback.format_exception(error)), caplog.text, out, err])


def test_wrong_key_never_shows_in_a_401(
    openai_emulator: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    debug_logging(caplog)
    wrong = unique_key()
    use_emulator(monkeypatch, openai_emulator, password=wrong)
    with pytest.raises(PSOpenAIAuthenticationError) as raised:
        PSOpenAIHook(max_retry_count=2).get_batch("batch_1")
    said = everything_said(raised.value, caplog, capfd)
    assert "receive_response_headers" in caplog.text  # the DEBUG logs were captured
    assert wrong not in said
    assert wrong[-8:] not in said


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.server_error(500), PSOpenAIServerError),
        (Fault.rate_limit(retry_after_ms=1), PSOpenAIAPIError),
        (Fault.drop(), PSOpenAITransportError),
        (Fault.hang(5), PSOpenAITransportError),
    ],
    ids=["500", "429", "drop", "timeout"],
)
def test_key_never_shows_in_failing_calls_logs_or_errors(
    secret_emulator: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    fast_backoff: None,
    fault: Fault,
    error: type[Exception],
) -> None:
    debug_logging(caplog)
    use_emulator(monkeypatch, secret_emulator)
    secret_emulator.add_fault(fault, times=5)
    with pytest.raises(error) as raised:
        PSOpenAIHook(max_retry_count=1, timeout_sec=0.3).cancel_batch("batch_1")
    said = everything_said(raised.value, caplog, capfd)
    assert "batch_1" in said
    assert secret_emulator.api_key not in said
    assert len(secret_emulator.journal) == 2


def test_key_echoed_by_a_proxy_is_redacted(secret_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use_emulator(monkeypatch, secret_emulator)
    key = secret_emulator.api_key
    secret_emulator.add_fault(Fault.answer(400, error_json(f"Bad header: Bearer {key}")))
    with pytest.raises(PSOpenAIAPIError) as raised:
        PSOpenAIHook().get_batch("batch_1")
    assert key not in str(raised.value)
    assert raised.value.api_message is not None
    assert key not in raised.value.api_message
    assert "Bearer ***" in raised.value.api_message


def test_key_never_shows_in_repr_of_settings(secret_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use_emulator(monkeypatch, secret_emulator)
    hook = PSOpenAIHook()
    assert hook.settings.api_key == secret_emulator.api_key
    assert secret_emulator.api_key not in repr(hook.settings)
    assert secret_emulator.api_key not in str(hook.settings)


def test_key_from_the_environment_is_registered_with_airflows_secrets_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow masks a connection's password itself; a key from OPENAI_API_KEY is masked only by the hook.
    from airflow.providers.common.compat.sdk import redact

    key = unique_key()
    monkeypatch.delenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    line = f"calling with {key} now"
    hook = PSOpenAIHook()
    assert redact(line) == line  # not masked before the hook resolved its settings
    assert hook.settings.api_key == key
    assert redact(line) == "calling with *** now"


def test_key_from_the_connection_is_masked_once_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import redact

    key = unique_key()
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", f'{{"conn_type": "psopenai", "password": "{key}"}}')
    line = f"calling with {key} now"
    hook = PSOpenAIHook()
    assert redact(line) == line  # creating the hook looks nothing up
    _ = hook.settings
    assert redact(line) == "calling with *** now"


async def test_key_is_masked_after_async_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.common.compat.sdk import redact

    key = unique_key()
    monkeypatch.delenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    assert redact({"header": f"Bearer {key}"}) == {"header": f"Bearer {key}"}
    await PSOpenAIHook().asettings()
    assert redact({"header": f"Bearer {key}"}) == {"header": "Bearer ***"}


def test_retry_after_date_in_minus_0000_form_is_utc() -> None:
    from datetime import UTC, datetime
    from email.utils import format_datetime

    from airflow_psopenai.client.errors import retry_after_seconds

    now = 1_800_000_000.0
    moment = datetime.fromtimestamp(now + 30, tz=UTC).replace(tzinfo=None)
    header = format_datetime(moment)  # a naive datetime is written with "-0000"
    assert header.endswith("-0000")
    assert retry_after_seconds(httpx.Headers({"retry-after": header}), now=now) == pytest.approx(30, abs=1)


def test_quota_stays_a_quota_error_when_the_server_says_retry() -> None:
    from airflow_psopenai.client.errors import error_from_response
    from airflow_psopenai.client.settings import ApiSettings

    response = httpx.Response(
        429,
        headers={"x-should-retry": "true"},
        json={"error": {"message": "quota", "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}},
    )
    settings = ApiSettings(conn_id="c", api_base="https://x/v1", api_key="sk")
    error = error_from_response(response, settings=settings, target="batch 'b'", assistants_api=False)
    assert isinstance(error, PSOpenAIQuotaError)
    assert error.retryable


# -- redaction of what servers and transports say ---------------------------------------------------------------


def key_variants(key: str) -> dict[str, str]:
    """Return the forms in which a proxy or a transport error may quote a key."""
    from urllib.parse import quote

    return {
        "as is": key,
        "partial": key[:16],
        "url-encoded": quote(key, safe=""),
        "json-escaped": json.dumps(key)[1:-1],
        "html-escaped": key.replace("&", "&amp;").replace("+", "&#43;"),
    }


@pytest.mark.parametrize("form", ["as is", "partial", "url-encoded", "json-escaped", "html-escaped"])
def test_a_key_echoed_in_any_form_is_redacted(monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    key = 'sk-proj-Ab+c/d=e&f"g_' + unique_key()[8:]
    with OpenAIEmulator(api_key=key) as emulator:
        use_emulator(monkeypatch, emulator)
        echoed = key_variants(key)[form]
        emulator.add_fault(Fault.answer(400, error_json(f"Bad header: Authorization: Bearer {echoed}...")))
        with pytest.raises(PSOpenAIAPIError) as raised:
            PSOpenAIHook().get_batch("batch_1")
    for variant in key_variants(key).values():
        assert variant not in str(raised.value)
    assert "Bad header: Authorization: Bearer ***" in str(raised.value)


def test_a_proxys_page_echoing_the_headers_never_shows_the_key(
    secret_emulator: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    debug_logging(caplog)
    use_emulator(monkeypatch, secret_emulator)
    secret_emulator.add_fault(Fault.server_error(502, echo_headers=True))
    with pytest.raises(PSOpenAIServerError) as raised:
        PSOpenAIHook().get_batch("batch_1")
    said = everything_said(raised.value, caplog, capfd)
    assert "Request headers" in said
    assert secret_emulator.api_key not in said


def test_a_local_protocol_error_is_permanent_and_redacted() -> None:
    from airflow_psopenai.client.errors import transport_error
    from airflow_psopenai.client.settings import ApiSettings

    key = unique_key()
    settings = ApiSettings(conn_id="psopenai_default", api_base="https://api.openai.com/v1", api_key=key)
    error = transport_error(
        httpx.LocalProtocolError(f"Illegal header value b'Bearer {key}\\n'"), settings=settings, target="batch 'b'"
    )
    assert not error.retryable
    assert key not in str(error)
    assert key[:16] not in str(error)


# -- the request id behind a gateway ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-request-id": "req_1", "x-litellm-call-id": "call-2"}, "req_1"),
        ({"x-litellm-call-id": "0b8e2a44-call"}, "0b8e2a44-call"),  # LiteLLM's proxy sends only its own
        ({}, None),
    ],
)
def test_the_request_id_falls_back_to_a_gateways_and_is_none_only_without_any(
    headers: dict[str, str], expected: str | None
) -> None:
    from airflow_psopenai.client.errors import error_from_response
    from airflow_psopenai.client.settings import ApiSettings

    body = {"error": {"message": "Error code: 409 - Cannot cancel a batch with status 'completed'.", "code": "409"}}
    response = httpx.Response(409, headers=headers, json=body)
    settings = ApiSettings(conn_id="c", api_base="http://gateway:4000/v1", api_key="sk")
    error = error_from_response(response, settings=settings, target="batch 'b'", assistants_api=False)
    assert error.request_id == expected
    assert (f"request id {expected}" in str(error)) == (expected is not None)


def test_a_gateways_request_id_is_redacted() -> None:
    from airflow_psopenai.client.errors import error_from_response
    from airflow_psopenai.client.settings import ApiSettings

    key = unique_key()
    response = httpx.Response(500, headers={"x-litellm-call-id": f"call-{key}"}, json={"error": {"message": "x"}})
    settings = ApiSettings(conn_id="c", api_base="http://gateway:4000/v1", api_key=key)
    error = error_from_response(response, settings=settings, target="batch 'b'", assistants_api=False)
    assert error.request_id == "call-***"
    assert key not in str(error)
