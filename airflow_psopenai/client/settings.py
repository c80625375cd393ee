"""Resolve where the API is, which key and organization, and the retry and timeout numbers.

Each setting resolves as: argument given to the hook > connection > environment > default.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from airflow_psopenai import __version__
from airflow_psopenai.client.proxies import environment_proxy
from airflow_psopenai.client.redaction import Redactor
from airflow_psopenai.client.validation import require_flag, require_retry_count, require_timeout
from airflow_psopenai.exceptions import PSOpenAIConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.providers.common.compat.sdk import Connection

DEFAULT_API_BASE = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2025-04-01-preview"
# A dead host must not hold a worker slot or a trigger forever, even with timeout_sec=0.
CONNECT_TIMEOUT_SEC = 10.0
USER_AGENT = f"airflow-psopenai/{__version__} httpx/{httpx.__version__}"

API_TYPES = ("openai", "azure")
AUTH_TYPES = ("api_key", "entra_id")
ENV_API_KEY = "OPENAI_API_KEY"
ENV_API_BASE = "OPENAI_API_BASE"
ENV_ORGANIZATION = "OPENAI_ORGANIZATION"
# The official apache-airflow-providers-openai connection type, reused as is.
OFFICIAL_OPENAI_CONN_TYPE = "openai"

_T = TypeVar("_T")


@dataclass(frozen=True)
class HookOverrides:
    """Per-call settings that operators, sensors and triggers pass to the hook (never a key)."""

    api_base: str | None = None
    organization: str | None = None
    timeout_sec: float | None = None
    max_retry_count: int | None = None

    def __post_init__(self) -> None:
        if self.timeout_sec is not None:
            object.__setattr__(self, "timeout_sec", require_timeout(self.timeout_sec))
        if self.max_retry_count is not None:
            object.__setattr__(self, "max_retry_count", require_retry_count(self.max_retry_count))


class SecretHeaders(dict[str, str]):
    """Request headers whose ``repr`` leaves the values out.

    A traceback that shows each frame's locals (Airflow 3.0 renders task errors that way) would
    otherwise print the key of every frame that holds the headers.
    """

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{name!r}: '***'" for name in self) + "}"


@dataclass(frozen=True)
class ApiSettings:
    """Everything needed to call the API; the key is left out of ``repr``."""

    conn_id: str
    api_base: str
    api_key: str = field(repr=False)
    organization: str | None = None
    project: str | None = None
    api_type: str = "openai"
    api_version: str = DEFAULT_AZURE_API_VERSION
    auth_type: str = "api_key"
    timeout_sec: float = 0.0
    max_retry_count: int = 0
    proxy: str | None = None
    coalesce_polling: bool = True

    @property
    def azure_dated_api(self) -> bool:
        """Return whether paths go under ``/openai`` with an ``api-version`` (Azure's dated API, not v1)."""
        return self.api_type == "azure" and not self.api_base.endswith("/openai/v1")

    def url(self, path: str, **query: str) -> httpx.URL:
        """Return the URL of an API path such as ``/batches/batch_1``, with Azure's ``api-version`` and ``query``."""
        prefix = "/openai" if self.azure_dated_api and not self.api_base.endswith("/openai") else ""
        if self.azure_dated_api:
            query = {"api-version": self.api_version, **query}
        return _parsed_url(f"{self.api_base}{prefix}{path}", tuple(query.items()))

    def headers(self, extra: Mapping[str, str]) -> SecretHeaders:
        """Return the request headers: authentication, organization and project when set, ``extra``."""
        if self.api_type == "azure" and self.auth_type == "api_key":
            headers = SecretHeaders({"api-key": self.api_key})
        else:
            headers = SecretHeaders({"Authorization": f"Bearer {self.api_key}"})
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        headers.update(extra)
        return headers

    def timeout(self, time_left: float | None = None) -> httpx.Timeout:
        """Return httpx timeouts: ``timeout_sec`` per request (0: none), cut to ``time_left`` (a wait's
        remaining time) when given, and always a connect timeout."""
        overall = self.timeout_sec or None
        if time_left is not None:
            overall = time_left if overall is None else min(overall, time_left)
        connect = CONNECT_TIMEOUT_SEC if overall is None else min(CONNECT_TIMEOUT_SEC, overall)
        return httpx.Timeout(overall, connect=connect)

    @functools.cached_property
    def redact(self) -> Redactor:
        """Return the function that takes the key (whole, partial, escaped) out of what a server or transport said."""
        return Redactor(self.api_key)


@functools.lru_cache(maxsize=4096)
def _parsed_url(url: str, query: tuple[tuple[str, str], ...]) -> httpx.URL:
    """Parse a URL once: httpx checks every character of a URL given as text, on every request."""
    return httpx.URL(url, params=query or None)


def resolve_settings(
    conn_id: str,
    connection: Connection | None,
    connection_extras: Mapping[str, Any],
    overrides: HookOverrides,
    environ: Mapping[str, str] = os.environ,
) -> ApiSettings:
    """Return the settings from the hook's overrides, the connection (if any), the environment and defaults.

    :param connection_extras: The connection's extras, read by the caller (synchronously in a task,
        asynchronously in a trigger).
    """
    extras = _connection_extras(connection, connection_extras)
    api_type = str(extras.get("api_type") or "openai").lower()
    if api_type not in API_TYPES:
        raise PSOpenAIConfigurationError(
            f"Connection {conn_id!r}: api_type must be one of {', '.join(API_TYPES)}, got {api_type!r}."
        )
    auth_type = str(extras.get("auth_type") or "api_key").lower()
    if auth_type not in AUTH_TYPES:
        raise PSOpenAIConfigurationError(
            f"Connection {conn_id!r}: auth_type must be one of {', '.join(AUTH_TYPES)}, got {auth_type!r}."
        )
    api_base = overrides.api_base or _connection_base(connection) or environ.get(ENV_API_BASE)
    if not api_base:
        if api_type == "azure":
            raise PSOpenAIConfigurationError(
                f"Connection {conn_id!r} is of api_type 'azure' but has no host: set it to the resource "
                "endpoint, such as https://RESOURCE.openai.azure.com."
            )
        api_base = DEFAULT_API_BASE
    api_key = _header_value(conn_id, "API key", connection.password if connection else None) or _header_value(
        conn_id, f"API key from {ENV_API_KEY}", environ.get(ENV_API_KEY)
    )
    if not api_key:
        raise PSOpenAIConfigurationError(
            f"No API key: connection {conn_id!r} has no password and {ENV_API_KEY} is not set. "
            "Put the key in the connection's password field (it is stored as a secret)."
        )
    try:
        timeout_sec = _first_set(overrides.timeout_sec, extras.get("timeout_sec"), 0.0, check=require_timeout)
        max_retry_count = _first_set(
            overrides.max_retry_count, extras.get("max_retry_count"), 0, check=require_retry_count
        )
        coalesce_polling = _first_set(None, extras.get("coalesce_polling"), True, check=require_flag)
    except ValueError as error:
        raise PSOpenAIConfigurationError(f"Connection {conn_id!r}: {error}") from None
    api_base = checked_api_base(conn_id, api_base)
    organization = overrides.organization or extras.get("organization") or environ.get(ENV_ORGANIZATION)
    return ApiSettings(
        conn_id=conn_id,
        api_base=api_base,
        api_key=api_key,
        organization=_header_value(conn_id, "organization", organization) or None,
        project=_header_value(conn_id, "project", extras.get("project")) or None,
        api_type=api_type,
        api_version=str(extras.get("api_version") or DEFAULT_AZURE_API_VERSION),
        auth_type=auth_type,
        timeout_sec=timeout_sec,
        max_retry_count=max_retry_count,
        proxy=environment_proxy(api_base, environ),
        coalesce_polling=coalesce_polling,
    )


def _header_value(conn_id: str, name: str, value: object) -> str:
    """Return a setting sent in a header, without the white space a secrets file adds around it.

    A control character or a non-ASCII character inside cannot be sent (and would end up quoted in a
    transport error): refused here, naming the setting and never showing its value.
    """
    text = "" if value is None else str(value).strip()
    if any(not " " <= char <= "~" for char in text):
        raise PSOpenAIConfigurationError(
            f"Connection {conn_id!r}: the {name} holds a control character or a non-ASCII character (a line "
            "break, a tab, a typographic quote?), which cannot be sent in an HTTP header. Copy it again from "
            "its source; white space around it is dropped by itself."
        )
    return text


def _connection_base(connection: Connection | None) -> str | None:
    """Return the API base a connection names.

    The JSON form keeps the whole URL in host; the URI form splits it into host, port and schema
    (``psopenai://:KEY@gateway:8080/v1``, or ``psopenai://http://:KEY@gateway:8080/v1`` for plain
    HTTP, where Airflow keeps the scheme in host), which are put back together here.
    """
    if connection is None or not connection.host:
        return None
    port = f":{connection.port}" if connection.port else ""
    path = f"/{connection.schema.strip('/')}" if connection.schema else ""
    return f"{connection.host.strip()}{port}{path}"


def _connection_extras(connection: Connection | None, connection_extras: Mapping[str, Any]) -> dict[str, Any]:
    """Return the extras, reading the official provider's ``openai_client_kwargs`` for its ``openai`` type."""
    if connection is None:
        return {}
    extras: dict[str, Any] = dict(connection_extras)
    if connection.conn_type == OFFICIAL_OPENAI_CONN_TYPE:
        client_kwargs = extras.get("openai_client_kwargs") or {}
        for name in ("organization", "project"):
            extras.setdefault(name, client_kwargs.get(name))
    return extras


def _first_set(override: _T | None, extra: object, default: _T, *, check: Callable[[object], _T]) -> _T:
    for value in (override, extra):
        if value is not None and value != "":
            return check(value)
    return default


# "http//host", "https:host", "http:/host": a scheme without its "://", which must not become a host.
_SCHEME_TYPO = re.compile(r"^https?(:/?|//)(?!/)", re.IGNORECASE)
# Labels of letters, digits, "-" and "_" (container service names use it).
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?$")


def checked_api_base(conn_id: str, api_base: str) -> str:
    """Return ``api_base`` as an http(s) URL with a host, or raise naming the connection and the value.

    A bare host (``gateway.example/v1``) gets ``https://``; anything that still is not a URL with a
    host would otherwise fail later as a confusing network error.
    """
    base = api_base.strip().rstrip("/")
    if _SCHEME_TYPO.match(base):
        _refuse_base(conn_id, base, "its scheme lacks '://'")
    if "://" not in base:
        base = f"https://{base}"
    parts = urlsplit(base)
    if parts.scheme.lower() not in ("http", "https"):
        _refuse_base(conn_id, base, f"the scheme {parts.scheme!r} is neither http nor https")
    if "@" in parts.netloc:
        _refuse_base(conn_id, base, "it holds a user name or password: put the key in the connection's password")
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        _refuse_base(conn_id, base, "its port is not a number")
    host = parts.hostname or ""
    # "none": the host a template that rendered None gives (hostnames come back in lower case).
    if host in ("", "none") or not (":" in host or _HOST_NAME.match(host)) or any(c.isspace() for c in base):
        _refuse_base(conn_id, base, "it has no valid host")
    return base


def _refuse_base(conn_id: str, base: str, reason: str) -> None:
    shown = re.sub(r"//[^/@]*@", "//***@", base)  # never quote credentials someone put in the URL
    raise PSOpenAIConfigurationError(
        f"Connection {conn_id!r}: the API base {shown!r} is not an http(s) URL with a host ({reason}). Set the "
        "connection's host (or api_base=) to a URL such as https://api.openai.com/v1, or http://HOST:PORT/v1 "
        "for a server without TLS."
    )
