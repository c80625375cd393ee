"""Resolve where the API is, which key and organization, and the retry and timeout numbers.

Each setting resolves as: argument given to the hook > connection > environment > default.
"""

from __future__ import annotations

import functools
import os
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from airflow_psopenai import __version__
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.validation import require_retry_count, require_timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.sdk import Connection

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

    def headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        """Return the request headers: authentication, organization and project when set, ``extra``."""
        if self.api_type == "azure" and self.auth_type == "api_key":
            headers = {"api-key": self.api_key}
        else:
            headers = {"Authorization": f"Bearer {self.api_key}"}
        if self.organization:
            headers["OpenAI-Organization"] = self.organization
        if self.project:
            headers["OpenAI-Project"] = self.project
        headers.update(extra)
        return headers

    def timeout(self) -> httpx.Timeout:
        """Return httpx timeouts: ``timeout_sec`` per request (0: none), and always a connect timeout."""
        limit = self.timeout_sec or None
        connect = min(CONNECT_TIMEOUT_SEC, limit) if limit else CONNECT_TIMEOUT_SEC
        return httpx.Timeout(limit, connect=connect)

    def redact(self, text: str) -> str:
        """Return ``text`` with the key replaced, for messages built from what a server sent."""
        return text.replace(self.api_key, "***") if self.api_key else text


@functools.lru_cache(maxsize=4096)
def _parsed_url(url: str, query: tuple[tuple[str, str], ...]) -> httpx.URL:
    """Parse a URL once: httpx checks every character of a URL given as text, on every request."""
    return httpx.URL(url, params=query or None)


def resolve_settings(
    conn_id: str,
    connection: Connection | None,
    overrides: HookOverrides,
    environ: Mapping[str, str] = os.environ,
) -> ApiSettings:
    """Return the settings from the hook's overrides, the connection (if any), the environment and defaults."""
    extras = _connection_extras(connection)
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
    api_key = (connection.password if connection else None) or environ.get(ENV_API_KEY)
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
    except ValueError as error:
        raise PSOpenAIConfigurationError(f"Connection {conn_id!r}: {error}") from None
    api_base = _checked_base(conn_id, _normalise_base(api_base))
    return ApiSettings(
        conn_id=conn_id,
        api_base=api_base,
        api_key=api_key,
        organization=overrides.organization or extras.get("organization") or environ.get(ENV_ORGANIZATION),
        project=extras.get("project") or None,
        api_type=api_type,
        api_version=str(extras.get("api_version") or DEFAULT_AZURE_API_VERSION),
        auth_type=auth_type,
        timeout_sec=timeout_sec,
        max_retry_count=max_retry_count,
        proxy=environment_proxy(api_base),
    )


def environment_proxy(url: str) -> str | None:
    """Return the proxy that HTTP(S)_PROXY or ALL_PROXY set for ``url``, unless NO_PROXY exempts its host.

    httpx's clients read these themselves; the shared async pool sends on bare transports, which
    do not, so it is given the proxy this returns.
    """
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    if not proxies or urllib.request.proxy_bypass(parts.netloc):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def _connection_base(connection: Connection | None) -> str | None:
    """Return the API base a connection names.

    The JSON form keeps the whole URL in host; the URI form (``psopenai://:KEY@gateway:8080/v1``)
    splits it into host, port and schema, which are put back together here.
    """
    if connection is None or not connection.host:
        return None
    if "://" in connection.host:
        return connection.host
    port = f":{connection.port}" if connection.port else ""
    path = f"/{connection.schema.strip('/')}" if connection.schema else ""
    return f"https://{connection.host}{port}{path}"


def _connection_extras(connection: Connection | None) -> dict[str, Any]:
    """Return the extras, reading the official provider's ``openai_client_kwargs`` for its ``openai`` type."""
    if connection is None:
        return {}
    extras: dict[str, Any] = dict(connection.extra_dejson)
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


def _normalise_base(api_base: str) -> str:
    base = api_base.strip().rstrip("/")
    return base if "://" in base else f"https://{base}"


def _checked_base(conn_id: str, api_base: str) -> str:
    """Return ``api_base`` if it is an http(s) URL with a host; a typo would otherwise look like a network error."""
    parts = urlsplit(api_base)
    # "none": the host a template that rendered None gives (hostnames come back in lower case).
    if parts.scheme not in ("http", "https") or (parts.hostname or "none") == "none":
        raise PSOpenAIConfigurationError(
            f"Connection {conn_id!r}: the API base {api_base!r} is not an http(s) URL with a host. Set the "
            "connection's host (or api_base=) to a URL such as https://api.openai.com/v1."
        )
    return api_base
