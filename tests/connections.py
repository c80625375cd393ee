"""Helpers of the hook and client tests: connections in the environment, mocked transports, retry warnings.

Their fixtures (``fast_backoff``, ``shared_pool``) are in tests/conftest.py.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

import httpx

from airflow_psopenai.hooks import PSOpenAIHook

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest

    from airflow_psopenai.testing import OpenAIEmulator

MOCK_API_BASE = "https://api.example.test/v1"
WAIT_PATTERN = re.compile(r"waiting (\d+\.\d+) s before attempt (\d+) of (\d+)")


def unique_key() -> str:
    """Return an API key no other test uses, so that a leak or a mask can be traced to one test."""
    return "sk-test-" + secrets.token_hex(16)


def conn_json(host: str | None = None, password: str | None = None, conn_type: str = "psopenai", **extra: Any) -> str:
    """Return an ``AIRFLOW_CONN_*`` value (JSON form); None fields are left out."""
    fields: dict[str, Any] = {"conn_type": conn_type, "extra": extra}
    if host is not None:
        fields["host"] = host
    if password is not None:
        fields["password"] = password
    return json.dumps(fields)


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, value: str) -> None:
    """Define a connection the way Airflow reads it from the environment."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)


def use_emulator(
    monkeypatch: pytest.MonkeyPatch,
    emulator: OpenAIEmulator,
    conn_id: str = "psopenai_default",
    password: str | None = None,
    **extra: Any,
) -> None:
    """Point ``conn_id`` at the emulator, with its key unless ``password`` is given."""
    set_connection(monkeypatch, conn_id, conn_json(emulator.api_base, password or emulator.api_key, **extra))


class MockedApi:
    """A hook answering through ``httpx.MockTransport``, for the retry table; it records each request."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        handler: Callable[[httpx.Request], httpx.Response],
        *,
        api_base: str = MOCK_API_BASE,
        key: str | None = None,
        **hook_kwargs: Any,
    ) -> None:
        self.key = key or unique_key()
        self.requests: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        set_connection(monkeypatch, "psopenai_default", conn_json(api_base, self.key))
        self.hook = PSOpenAIHook(**hook_kwargs)
        self.hook.__dict__["client"] = httpx.Client(transport=httpx.MockTransport(record), timeout=5)


def json_error(
    status: int,
    message: str = "Something went wrong.",
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Return an OpenAI-style JSON error answer."""
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return httpx.Response(status, json=body, headers=headers)


def retry_waits(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> list[tuple[float, int, int]]:
    """Return ``(seconds, next attempt, attempts)`` of each retry warning the hook logged so far.

    Airflow's structlog loggers write to the standard streams, or to the logging module once Airflow
    configured it: both are read, the logging records first.
    """
    out, err = capfd.readouterr()
    for text in (caplog.text, out + err):
        found = [(float(s), int(n), int(m)) for s, n, m in WAIT_PATTERN.findall(text)]
        if found:
            return found
    return []
