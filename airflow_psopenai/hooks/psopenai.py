"""PSOpenAIHook: the one way this provider talks to the OpenAI API."""

from __future__ import annotations

import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import amask_secret, mask_secret

from airflow_psopenai.exceptions import (
    PSOpenAIAPIError,
    PSOpenAICannotCancelError,
    PSOpenAIConfigurationError,
    PSOpenAIError,
    PSOpenAINotFoundError,
)
from airflow_psopenai.hooks.errors import error_from_response, invalid_success_body, transport_error
from airflow_psopenai.hooks.pool import shared_pool
from airflow_psopenai.hooks.retry import RetryPolicy
from airflow_psopenai.hooks.settings import ENV_API_KEY, USER_AGENT, HookOverrides, resolve_settings
from airflow_psopenai.hooks.settings_cache import shared_settings
from airflow_psopenai.resources import BATCH, THREAD_RUN, CancellableResource
from airflow_psopenai.validation import require_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.sdk import Connection

    from airflow_psopenai.hooks.settings import ApiSettings

JsonObject = dict[str, Any]
# The statuses of the API's "cannot cancel" refusals: 409 for batches, 400 for runs.
CANNOT_CANCEL_STATUSES = (400, 409)


class _Call:
    """One prepared API call: what to send, and how to name its target in messages."""

    def __init__(
        self,
        settings: ApiSettings,
        method: str,
        resource: CancellableResource,
        ids: Mapping[str, str],
        action: str,
    ) -> None:
        self.settings = settings
        self.method = method
        self.resource = resource
        self.path = resource.cancel_path(ids) if action == "cancel" else resource.path(ids)
        self.url = settings.url(self.path)
        self.headers = settings.headers(resource.headers)
        self.target = resource.describe(ids)


class PSOpenAIHook(BaseHook):
    """Retrieve, cancel and create OpenAI objects with the seed's retry and timeout policy.

    :param conn_id: Airflow connection of type ``psopenai`` (or the official ``openai`` type).
    :param api_base: Overrides the connection's API base.
    :param organization: Overrides the connection's organization.
    :param timeout_sec: Per-request limit in seconds; 0 means no overall limit (a connect timeout applies).
    :param max_retry_count: Retries of a failed call, 0 to 100.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "psopenai_default"
    conn_type = "psopenai"
    hook_name = "PSOpenAI (OpenAI API)"

    def __init__(
        self,
        conn_id: str = default_conn_name,
        *,
        api_base: str | None = None,
        organization: str | None = None,
        timeout_sec: float | None = None,
        max_retry_count: int | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.overrides = HookOverrides(
            api_base=api_base,
            organization=organization,
            timeout_sec=timeout_sec,
            max_retry_count=max_retry_count,
        )
        self._settings: ApiSettings | None = None
        self._retry_policy: RetryPolicy | None = None

    # -- settings ---------------------------------------------------------------------------------

    @property
    def settings(self) -> ApiSettings:
        """Return the resolved settings, looking the connection up once (synchronously)."""
        if self._settings is None:
            try:
                connection: Connection | None = self.get_connection(self.conn_id)
            except AirflowNotFoundException:
                self._allow_missing_connection()
                connection = None
            settings = resolve_settings(self.conn_id, connection, self.overrides)
            mask_secret(settings.api_key)
            self._adopt(settings)
        assert self._settings is not None
        return self._settings

    async def asettings(self) -> ApiSettings:
        """Return the resolved settings without blocking the event loop.

        Hooks of one event loop with the same connection and overrides share one lookup (for a
        minute): a triggerer starting a thousand waits looks the connection up once.
        """
        if self._settings is None:
            self._adopt(await shared_settings((self.conn_id, self.overrides), self._alookup_settings))
        assert self._settings is not None
        return self._settings

    async def _alookup_settings(self) -> ApiSettings:
        try:
            connection: Connection | None = await self.aget_connection(self.conn_id)
        except AirflowNotFoundException:
            self._allow_missing_connection()
            connection = None
        settings = resolve_settings(self.conn_id, connection, self.overrides)
        # The sync mask_secret would block the event loop talking to the supervisor.
        await amask_secret(settings.api_key)
        return settings

    def _allow_missing_connection(self) -> None:
        """Allow a missing default connection when the environment has a key (as the seed does)."""
        if self.conn_id == self.default_conn_name and os.environ.get(ENV_API_KEY):
            return
        raise PSOpenAIConfigurationError(
            f"Connection {self.conn_id!r} is not defined. Create it (Admin > Connections, type psopenai, or "
            f'AIRFLOW_CONN_{self.conn_id.upper()}=\'{{"conn_type": "psopenai", "password": "sk-..."}}\'), '
            f"or use {self.default_conn_name!r} with {ENV_API_KEY} set."
        )

    def _adopt(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._retry_policy = RetryPolicy(settings.max_retry_count, self.log)

    @property
    def retry_policy(self) -> RetryPolicy:
        """Return the retry policy, built once from the resolved ``max_retry_count``."""
        _ = self.settings
        assert self._retry_policy is not None
        return self._retry_policy

    @cached_property
    def client(self) -> httpx.Client:
        """Return this hook's synchronous client, reused across calls (keep-alive)."""
        return httpx.Client(timeout=self.settings.timeout(), headers={"User-Agent": USER_AGENT})

    def close(self) -> None:
        """Close the synchronous client, if one was opened."""
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    # -- generic calls over the resource table ----------------------------------------------------

    def get_object(self, resource: CancellableResource, ids: Mapping[str, object]) -> JsonObject:
        """Retrieve an object."""
        return self._send(_Call(self.settings, "GET", resource, _checked_ids(resource, ids), "get"))

    def cancel_object(self, resource: CancellableResource, ids: Mapping[str, object]) -> JsonObject:
        """Request cancellation; the API's "cannot cancel" refusal raises ``PSOpenAICannotCancelError``."""
        checked = _checked_ids(resource, ids)
        try:
            return self._send(_Call(self.settings, "POST", resource, checked, "cancel"))
        except PSOpenAIAPIError as error:
            raise _cannot_cancel(resource, checked, error) from error

    async def aget_object(self, resource: CancellableResource, ids: Mapping[str, object]) -> JsonObject:
        """Retrieve an object without blocking the event loop."""
        checked = _checked_ids(resource, ids)
        return await self._asend(_Call(await self.asettings(), "GET", resource, checked, "get"))

    async def acancel_object(self, resource: CancellableResource, ids: Mapping[str, object]) -> JsonObject:
        """Request cancellation without blocking the event loop."""
        checked = _checked_ids(resource, ids)
        try:
            return await self._asend(_Call(await self.asettings(), "POST", resource, checked, "cancel"))
        except PSOpenAIAPIError as error:
            raise _cannot_cancel(resource, checked, error) from error

    # -- named calls --------------------------------------------------------------------------------

    def get_batch(self, batch_id: str) -> JsonObject:
        """Retrieve a batch."""
        return self.get_object(BATCH, {"batch_id": batch_id})

    def cancel_batch(self, batch_id: str) -> JsonObject:
        """Cancel a batch; the answer is usually in status ``cancelling``."""
        return self.cancel_object(BATCH, {"batch_id": batch_id})

    def get_thread_run(self, thread_id: str, run_id: str) -> JsonObject:
        """Retrieve a thread run (Assistants API)."""
        return self.get_object(THREAD_RUN, {"thread_id": thread_id, "run_id": run_id})

    def cancel_thread_run(self, thread_id: str, run_id: str) -> JsonObject:
        """Cancel a thread run (Assistants API)."""
        return self.cancel_object(THREAD_RUN, {"thread_id": thread_id, "run_id": run_id})

    async def aget_batch(self, batch_id: str) -> JsonObject:
        """Retrieve a batch without blocking the event loop."""
        return await self.aget_object(BATCH, {"batch_id": batch_id})

    async def acancel_batch(self, batch_id: str) -> JsonObject:
        """Cancel a batch without blocking the event loop."""
        return await self.acancel_object(BATCH, {"batch_id": batch_id})

    async def aget_thread_run(self, thread_id: str, run_id: str) -> JsonObject:
        """Retrieve a thread run without blocking the event loop."""
        return await self.aget_object(THREAD_RUN, {"thread_id": thread_id, "run_id": run_id})

    async def acancel_thread_run(self, thread_id: str, run_id: str) -> JsonObject:
        """Cancel a thread run without blocking the event loop."""
        return await self.acancel_object(THREAD_RUN, {"thread_id": thread_id, "run_id": run_id})

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str = "/v1/chat/completions",
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Create a batch from an uploaded JSONL file (for example DAGs; not retried: it is not idempotent)."""
        settings = self.settings
        body: JsonObject = {
            "input_file_id": require_id("input_file_id", input_file_id),
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            body["metadata"] = dict(metadata)
        return self._request(
            "POST",
            settings.url("/batches"),
            headers=settings.headers({}),
            target="a new batch",
            body=body,
        )

    def test_connection(self) -> tuple[bool, str]:
        """Make one cheap authenticated GET (list one batch), for the UI's Test button and the CLI."""
        try:
            settings = self.settings
            self._request(
                "GET",
                settings.url("/batches", limit="1"),
                headers=settings.headers({}),
                target="the batch list",
            )
        except PSOpenAIError as error:
            return False, str(error)
        return True, f"Connected to {settings.api_base} (connection {self.conn_id!r}): the key was accepted."

    # -- transport ------------------------------------------------------------------------------------

    def _send(self, call: _Call) -> JsonObject:
        return self.retry_policy.call(
            lambda: self._request(
                call.method,
                call.url,
                headers=call.headers,
                target=call.target,
                assistants_api=call.resource.assistants_api,
            )
        )

    def _request(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str],
        target: str,
        body: JsonObject | None = None,
        assistants_api: bool = False,
    ) -> JsonObject:
        """Send one request on the synchronous client and return its JSON object, or raise this provider's error."""
        settings = self.settings
        try:
            response = self.client.request(method, url, headers=headers, json=body)
        except httpx.TransportError as error:
            raise transport_error(error, settings=settings, target=target) from error
        return self._parse(response, settings, target=target, assistants_api=assistants_api)

    async def _asend(self, call: _Call) -> JsonObject:
        settings = call.settings
        pool = shared_pool(settings.timeout(), settings.proxy)

        async def attempt() -> JsonObject:
            try:
                response = await pool.request(call.method, call.url, headers=call.headers)
            except httpx.TransportError as error:
                raise transport_error(error, settings=settings, target=call.target) from error
            return self._parse(response, settings, target=call.target, assistants_api=call.resource.assistants_api)

        assert self._retry_policy is not None
        return await self._retry_policy.acall(attempt)

    @staticmethod
    def _parse(response: httpx.Response, settings: ApiSettings, *, target: str, assistants_api: bool) -> JsonObject:
        if not response.is_success:
            raise error_from_response(
                response,
                settings=settings,
                target=target,
                assistants_api=assistants_api,
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise invalid_success_body(response, target=target)
        return body


def _checked_ids(resource: CancellableResource, ids: Mapping[str, object]) -> dict[str, str]:
    return {name: require_id(name, ids.get(name)) for name in resource.id_fields}


def _cannot_cancel(resource: CancellableResource, ids: Mapping[str, str], error: PSOpenAIAPIError) -> PSOpenAIError:
    """Return a ``PSOpenAICannotCancelError`` for the API's refusal, or ``error`` itself otherwise."""
    message = (error.api_message or "").rstrip(".")
    answer = f"HTTP {error.http_status}, request id {error.request_id or 'none'}"
    if isinstance(error, PSOpenAINotFoundError) and resource.cancel_not_found:
        return PSOpenAICannotCancelError(
            f"Cannot cancel {resource.describe(ids)}: the API answered its cancel with not found "
            f"({message or 'no message'}, {answer}): {resource.cancel_not_found}, or the ID is wrong.",
            status=None,
            ids=ids,
            api_error=error,
        )
    if error.http_status not in CANNOT_CANCEL_STATUSES or "cannot cancel" not in message.lower():
        return error
    status = _quoted_status(message)
    return PSOpenAICannotCancelError(
        f'Cannot cancel {resource.label} with status "{status or "unknown"}": the API refused to cancel '
        f"{resource.describe(ids)} ({message}, {answer}).",
        status=status,
        ids=ids,
        api_error=error,
    )


def _quoted_status(message: str) -> str | None:
    """Return the status quoted in "Cannot cancel a batch with status 'completed'."."""
    parts = message.split("'")
    return CancellableResource.normalise_status(parts[1]) if len(parts) >= 3 else None
