"""Turn an HTTP answer or a transport failure into this provider's errors, with clear words.

Every text built from what the server sent goes through ``ApiSettings.redact`` so that a proxy echoing the key
cannot leak it.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from airflow_psopenai.exceptions import (
    ASSISTANTS_SHUTDOWN_NOTE,
    PSOpenAIAPIError,
    PSOpenAIAssistantsShutdownError,
    PSOpenAIAuthenticationError,
    PSOpenAIInvalidResponseError,
    PSOpenAINotFoundError,
    PSOpenAIQuotaError,
    PSOpenAIRateLimitError,
    PSOpenAIServerError,
    PSOpenAITransportError,
)

if TYPE_CHECKING:
    from airflow_psopenai.client.settings import ApiSettings

OPENAI_HOST = "api.openai.com"
QUOTA_CODE = "insufficient_quota"
# Where an answer names its request: OpenAI's header, then a gateway's (LiteLLM's proxy sends only its call id).
REQUEST_ID_HEADERS = ("x-request-id", "x-litellm-call-id")


def retry_after_seconds(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Return the delay the server asked for: ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date)."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # "-0000" means UTC, but parses to a naive datetime
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp() - (time.time() if now is None else now)


def _should_retry_header(headers: httpx.Headers) -> bool | None:
    value = headers.get("x-should-retry", "").strip().lower()
    return {"true": True, "false": False}.get(value)


def _error_fields(response: httpx.Response) -> dict[str, Any] | None:
    """Return the ``error`` object of an OpenAI error body, or None when the body is not one."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else None


def _body_kind(response: httpx.Response, settings: ApiSettings) -> str:
    if not response.content:
        return "an empty body"
    content_type = settings.redact(response.headers.get("content-type", "unknown type").split(";")[0])
    return f"a {content_type} body that is not OpenAI's JSON (a proxy or gateway answered?)"


def request_id_of(response: httpx.Response, settings: ApiSettings) -> str | None:
    """Return the answer's ``x-request-id``, else a gateway's id of the request (``x-litellm-call-id``), redacted:
    a gateway may put anything there, the key included. None when the answer names no request."""
    request_id = next((value for name in REQUEST_ID_HEADERS if (value := response.headers.get(name))), None)
    return None if request_id is None else settings.redact(request_id)


def error_from_response(
    response: httpx.Response,
    *,
    settings: ApiSettings,
    target: str,
    assistants_api: bool,
) -> PSOpenAIAPIError:
    """Return the error for a non-2xx answer, with ``retryable`` and ``retry_after`` set by PSOpenAI's rules.

    :param target: What was asked for, in words (``batch 'batch_1'``), for the message.
    :param assistants_api: Whether the endpoint belongs to the Assistants API (for the shutdown note).
    """
    status = response.status_code
    fields = _error_fields(response)
    api_message = settings.redact(str(fields.get("message") or "")) if fields else None
    error_type = fields.get("type") if fields else None
    code = fields.get("code") if fields else None
    request_id = request_id_of(response, settings)
    detail = f": {api_message.rstrip('.')}" if api_message else f"; the server sent {_body_kind(response, settings)}"

    retryable = (status == 429 and QUOTA_CODE not in (code, error_type)) or status >= 500
    if (server_says := _should_retry_header(response.headers)) is not None:
        retryable = server_says

    cls: type[PSOpenAIAPIError] = PSOpenAIAPIError
    if status == 401:
        cls = PSOpenAIAuthenticationError
        message = (
            f"The API key of connection {settings.conn_id!r} was refused by {settings.api_base}{detail}. "
            "Check the connection's password (API key) or OPENAI_API_KEY."
        )
    elif status == 404 and assistants_api and urlsplit(settings.api_base).hostname == OPENAI_HOST:
        cls = PSOpenAIAssistantsShutdownError
        message = f"{target} was not found on {OPENAI_HOST}{detail}. {ASSISTANTS_SHUTDOWN_NOTE}"
    elif status == 404:
        cls = PSOpenAINotFoundError
        message = f"{target} was not found at {settings.api_base}{detail}. Check the ID and the connection."
    elif status == 429 and QUOTA_CODE in (code, error_type):
        cls = PSOpenAIQuotaError
        message = (
            f"The OpenAI account of connection {settings.conn_id!r} is out of quota{detail}. "
            "Retrying cannot help: check the plan and billing details."
        )
    elif status == 429:
        cls = PSOpenAIRateLimitError
        message = f"Rate limited while calling the API for {target}{detail}."
    elif status >= 500:
        cls = PSOpenAIServerError
        message = f"The API failed with a server error for {target}{detail}."
    elif fields is None:
        cls = PSOpenAIInvalidResponseError
        message = f"The API answered HTTP {status} for {target} with {_body_kind(response, settings)}."
    else:
        message = f"The API refused the request for {target}{detail}."
    return cls(
        message,
        http_status=status,
        error_type=error_type,
        code=code,
        api_message=api_message,
        request_id=request_id,
        retryable=retryable,
        retry_after=retry_after_seconds(response.headers),
    )


def invalid_success_body(
    response: httpx.Response, *, settings: ApiSettings, target: str
) -> PSOpenAIInvalidResponseError:
    """Return the error for a 2xx answer whose body is not a JSON object."""
    return PSOpenAIInvalidResponseError(
        f"The API answered HTTP {response.status_code} for {target} with {_body_kind(response, settings)}.",
        http_status=response.status_code,
        request_id=request_id_of(response, settings),
    )


def unreadable_body(
    response: httpx.Response, error: Exception, *, settings: ApiSettings, target: str
) -> PSOpenAIInvalidResponseError:
    """Return the error for an answer whose body could not be read (it does not match its ``Content-Encoding``).

    Transient, as a gateway's garbled answer usually is; the request reached the server.
    """
    encoding = settings.redact(response.headers.get("content-encoding", "none"))
    reason = settings.redact(str(error))
    return PSOpenAIInvalidResponseError(
        f"The answer of {settings.api_base} for {target} could not be read: its body does not match its "
        f"Content-Encoding ({encoding}: {reason}). A proxy or gateway garbled it?",
        http_status=response.status_code,
        request_id=request_id_of(response, settings),
        retryable=True,
    )


# How a request refused for a spent budget is named.
BUDGET_SPENT = "not sent: its time budget was spent"


def budget_spent(*, settings: ApiSettings, target: str) -> PSOpenAITransportError:
    """Return the error for a request not sent because the budget of its call (a callback's, a listing's) was spent."""
    return PSOpenAITransportError(
        f"The request to {settings.api_base} for {target} was {BUDGET_SPENT}.", retryable=False, lost_answer=False
    )


def transport_error(
    error: httpx.TransportError, *, settings: ApiSettings, target: str, time_left: float | None = None
) -> PSOpenAITransportError:
    """Return the error for a request that got no HTTP answer, its text redacted.

    A local protocol error (a request this client refused to send) is permanent: sending it again
    cannot help. A TLS handshake that meets plain HTTP says how to write the API base.

    :param time_left: The seconds the attempt was allowed when a wait's deadline cut its timeout.
    """
    if isinstance(error, httpx.TimeoutException):
        if time_left is not None and (not settings.timeout_sec or time_left < settings.timeout_sec):
            bound = "the wait's deadline"
        elif settings.timeout_sec:
            bound = f"timeout_sec={settings.timeout_sec:g}"
        else:
            bound = "the connect timeout"
        reason = f"timed out ({type(error).__name__}, {bound})"
    else:
        reason = f"failed: {type(error).__name__}: {error or 'connection closed'}"
    message = settings.redact(f"The request to {settings.api_base} for {target} {reason}.")
    if "WRONG_VERSION_NUMBER" in message and settings.api_base.startswith("https://"):
        plain = "http://" + settings.api_base.removeprefix("https://")
        message += f" The server does not speak TLS: if it serves plain HTTP, write {plain} as the API base."
    # Connecting failed, or this client refused to send: the server cannot have acted on the request.
    unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.LocalProtocolError | httpx.PoolTimeout)
    return PSOpenAITransportError(
        message, retryable=not isinstance(error, httpx.LocalProtocolError), lost_answer=not unsent
    )


def tls_context_error(error: Exception, *, settings: ApiSettings) -> PSOpenAITransportError:
    """Return the error for a TLS context that could not be made (a CA bundle missing or being replaced)."""
    reason = settings.redact(f"{type(error).__name__}: {error}")
    return PSOpenAITransportError(
        f"Could not load the TLS certificates (CA bundle) to call {settings.api_base}: {reason}. Check "
        "SSL_CERT_FILE / SSL_CERT_DIR; the next call tries again."
    )
