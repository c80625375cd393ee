"""PSOpenAIHook: the one way this provider talks to the OpenAI API."""

from __future__ import annotations

import asyncio
import os
import secrets
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

import httpx
from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook, mask_secret

from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.client.errors import (
    budget_spent,
    error_from_response,
    invalid_success_body,
    tls_context_error,
    transport_error,
    unreadable_body,
)
from airflow_psopenai.client.listing import metadata_holds, walk_list
from airflow_psopenai.client.pool import TLSContextError, UnreadableBodyError, shared_pool
from airflow_psopenai.client.retry import RetryPolicy
from airflow_psopenai.client.settings import ENV_API_KEY, USER_AGENT, HookOverrides, resolve_settings
from airflow_psopenai.client.settings_cache import shared_settings
from airflow_psopenai.client.validation import as_epoch_seconds, require_id, require_id_of
from airflow_psopenai.compat import amask_secret
from airflow_psopenai.exceptions import (
    PSOpenAIAPIError,
    PSOpenAICannotCancelError,
    PSOpenAIConfigurationError,
    PSOpenAIError,
    PSOpenAINotFoundError,
    PSOpenAITransportError,
    answer_may_be_lost,
)
from airflow_psopenai.hooks import connection_form
from airflow_psopenai.resources import BATCH, FINE_TUNING_JOB, RESPONSE, THREAD_RUN, CancellableResource, status_of
from airflow_psopenai.run_tags import CREATE_NONCE_KEY, DEPLOYMENT_KEY, deployment, tagged_metadata
from airflow_psopenai.task_tries import Earlier, TaskTry, current_try

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from airflow.providers.common.compat.sdk import Connection

    from airflow_psopenai.client.settings import ApiSettings

JsonObject = dict[str, Any]
# A batch an earlier try created is taken over while it runs or once it completed; one that failed,
# expired or was cancelled is not: the retry creates a new one.
REUSABLE_BATCH_STATUSES = BATCH.cancellable | {"completed"}
# Likewise a fine-tuning job that runs or succeeded.
REUSABLE_FINE_TUNING_JOB_STATUSES = FINE_TUNING_JOB.cancellable | {"succeeded"}
# The look for it reads at most this many pages of the batch list.
REUSE_PAGE_SIZE = 100
REUSE_MAX_PAGES = 10
# The look for duplicates of a create reads the newest page, within the create's own timeout (or this long).
DUPLICATE_LOOK_SEC = 30.0
# The answers of a gateway that serves no batch list: the look is skipped, and the batch created.
LIST_NOT_SERVED = (404, 405)
# The statuses of the API's "cannot cancel" refusals: 409 for batches, 400 for runs.
CANNOT_CANCEL_STATUSES = (400, 409)


class _Call:
    """One prepared API call: what to send, and how to name its target in messages."""

    def __init__(
        self,
        settings: ApiSettings,
        method: str,
        resource: CancellableResource,
        path: str,
        target: str,
        *,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.method = method
        self.resource = resource
        self.url = settings.url(path, **(query or {}))
        self.headers = settings.headers(resource.headers)
        self.target = target

    @classmethod
    def on_object(
        cls, settings: ApiSettings, method: str, resource: CancellableResource, ids: Mapping[str, str], action: str
    ) -> _Call:
        """Return the call that retrieves (``action="get"``) or cancels (``"cancel"``) one object."""
        path = resource.cancel_path(ids) if action == "cancel" else resource.path(ids)
        return cls(settings, method, resource, path, resource.describe(ids))


class PSOpenAIHook(BaseHook):
    """Retrieve, cancel and create OpenAI objects with PSOpenAI's retry and timeout policy.

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

    # -- the connection form of Airflow 3.0 and 3.1 (3.2+ read it from the provider info) -------------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the extra fields of the connection form."""
        return connection_form.form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Return which standard fields the form hides, relabels, and their placeholders."""
        return connection_form.ui_field_behaviour()

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
            extras = connection.extra_dejson if connection is not None else {}
            settings = resolve_settings(self.conn_id, connection, extras, self.overrides)
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
        # common-compat's lookups: on each Airflow line, the way that neither blocks nor deadlocks the loop.
        try:
            connection: Connection | None = await get_async_connection(self.conn_id, hook=self)
        except AirflowNotFoundException:
            self._allow_missing_connection()
            connection = None
        extras = await get_async_extra_dejson(connection) if connection is not None else {}
        settings = resolve_settings(self.conn_id, connection, extras, self.overrides)
        await amask_secret(settings.api_key)
        return settings

    def _allow_missing_connection(self) -> None:
        """Allow a missing default connection when the environment has a key (as PSOpenAI does)."""
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
        """Return this hook's synchronous client, reused across calls (keep-alive).

        It reads no proxy variable itself: it gets the proxy the shared rule picked, as the async pool does.
        """
        settings = self.settings
        return httpx.Client(
            timeout=settings.timeout(),
            headers={"User-Agent": USER_AGENT},
            proxy=settings.proxy,
            trust_env=False,
            verify=httpx.create_ssl_context(),  # SSL_CERT_FILE / SSL_CERT_DIR, as trust_env would read them
        )

    def close(self) -> None:
        """Close the synchronous client, if one was opened."""
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    # -- generic calls over the resource table ----------------------------------------------------

    def get_object(
        self, resource: CancellableResource, ids: Mapping[str, object], *, deadline: Deadline = NO_DEADLINE
    ) -> JsonObject:
        """Retrieve an object; inside a wait, ``deadline`` bounds the call and its retries."""
        call = _Call.on_object(self.settings, "GET", resource, _checked_ids(resource, ids), "get")
        return self.retry_policy.call(lambda time_left: self._attempt(call, time_left), deadline)

    def cancel_object(
        self, resource: CancellableResource, ids: Mapping[str, object], *, deadline: Deadline = NO_DEADLINE
    ) -> JsonObject:
        """Request cancellation; the API's "cannot cancel" refusal raises ``PSOpenAICannotCancelError``.

        Idempotent: after an attempt whose answer may be lost (a dropped connection, a timeout, a
        gateway's 5xx), a retry first retrieves the object, and if it is cancelling or cancelled the
        earlier attempt went through: that object is returned and no second cancel is sent. A
        "cannot cancel" refusal met after such an attempt is checked the same way.
        """
        cancel = _Cancel(self.settings, resource, _checked_ids(resource, ids), self.log)

        def attempt(time_left: float | None) -> JsonObject:
            if cancel.maybe_sent and (done := cancel.went_through(self._attempt(cancel.check, time_left))):
                return done
            try:
                return self._attempt(cancel.post, time_left)
            except PSOpenAIError as error:
                cancel.failed(error)
                raise

        try:
            return self.retry_policy.call(attempt, deadline)
        except PSOpenAIAPIError as error:
            refusal = cancel.refusal(error)
        current = self.retry_policy.call(lambda time_left: self._attempt(cancel.check, time_left), deadline)
        return cancel.went_through(current, refusal)

    async def aget_object(
        self, resource: CancellableResource, ids: Mapping[str, object], *, deadline: Deadline = NO_DEADLINE
    ) -> JsonObject:
        """Retrieve an object without blocking the event loop."""
        call = _Call.on_object(await self.asettings(), "GET", resource, _checked_ids(resource, ids), "get")
        return await self._asend(call, deadline, lambda time_left: self._aattempt(call, time_left))

    def list_page(
        self,
        resource: CancellableResource,
        *,
        after: str | None = None,
        page_size: int = 100,
        deadline: Deadline = NO_DEADLINE,
        metadata: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Return one page of the account's list of ``resource`` (newest first), after the object ``after``.

        :param deadline: Bounds the page and its retries (a listing's budget: each page gets what is left).
        :param metadata: Only the objects whose metadata holds these pairs, filtered by the server (for a
            resource whose list filters by metadata).
        """
        call = self._list_call(self.settings, resource, after, page_size, metadata)
        return self.retry_policy.call(lambda time_left: self._attempt(call, time_left), deadline)

    async def alist_page(
        self,
        resource: CancellableResource,
        *,
        after: str | None = None,
        page_size: int = 100,
        deadline: Deadline = NO_DEADLINE,
        metadata: Mapping[str, str] | None = None,
    ) -> JsonObject:
        """Return one page of the account's list of ``resource`` (newest first), after the object ``after``.

        :param metadata: As for :meth:`list_page`.
        :raises PSOpenAIConfigurationError: For a resource without a list, or a metadata filter its list lacks.
        """
        call = self._list_call(await self.asettings(), resource, after, page_size, metadata)
        return await self._asend(call, deadline, lambda time_left: self._aattempt(call, time_left))

    @staticmethod
    def _list_call(
        settings: ApiSettings,
        resource: CancellableResource,
        after: str | None,
        page_size: int,
        metadata: Mapping[str, str] | None = None,
    ) -> _Call:
        if resource.list_path is None:
            raise PSOpenAIConfigurationError(f"The API has no list of every {resource.label}.")
        if metadata and not resource.list_filters_metadata:
            raise PSOpenAIConfigurationError(f"The API's {resource.label} list does not filter by metadata.")
        query = {"limit": str(page_size), **({"after": after} if after else {})}
        query.update({f"metadata[{key}]": value for key, value in (metadata or {}).items()})
        # The cursor is an ID the server sent: it goes into messages redacted.
        target = settings.redact(f"the {resource.label} list" + (f" after {after!r}" if after else ""))
        return _Call(settings, "GET", resource, resource.list_path, target, query=query)

    async def acancel_object(
        self, resource: CancellableResource, ids: Mapping[str, object], *, deadline: Deadline = NO_DEADLINE
    ) -> JsonObject:
        """Request cancellation without blocking the event loop; idempotent as :meth:`cancel_object`."""
        cancel = _Cancel(await self.asettings(), resource, _checked_ids(resource, ids), self.log)

        async def attempt(time_left: float | None) -> JsonObject:
            if cancel.maybe_sent and (done := cancel.went_through(await self._aattempt(cancel.check, time_left))):
                return done
            try:
                return await self._aattempt(cancel.post, time_left)
            except PSOpenAIError as error:
                cancel.failed(error)
                raise

        try:
            return await self._asend(cancel.post, deadline, attempt)
        except PSOpenAIAPIError as error:
            refusal = cancel.refusal(error)
        current = await self._asend(cancel.check, deadline, lambda time_left: self._aattempt(cancel.check, time_left))
        return cancel.went_through(current, refusal)

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

    def get_response(self, response_id: str) -> JsonObject:
        """Retrieve a response (the Responses API)."""
        return self.get_object(RESPONSE, {"response_id": response_id})

    def cancel_response(self, response_id: str) -> JsonObject:
        """Cancel a background response; it is ``cancelled`` at once."""
        return self.cancel_object(RESPONSE, {"response_id": response_id})

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
        *,
        reuse_earlier_batch: bool = True,
    ) -> JsonObject:
        """Create a batch from an uploaded JSONL file (not retried: it is not idempotent).

        Called in a running task, the batch's metadata gets the run tags (``airflow_dag_id``,
        ``airflow_run_id``, ``airflow_task_id``, ``airflow_map_index`` when mapped; your own keys win),
        so that ``StopBatchesOperator(metadata=...)`` and ``cancel_run_batches`` find it.

        A retry pays for no second batch: in a running task, the batches an earlier try of the same task
        instance created (the same run tags, the same map index or none, and the same ``input_file_id`` and
        ``endpoint``, still running or completed) are looked for first: the batch list is read once per try,
        newest first, down to the DAG run's ``run_after`` less the cutoff margin (``[psopenai]
        cutoff_margin_sec``, 300 s), at most 10 pages (one page for an account that created fewer than 100
        batches since). ``run_after`` does not move when a failed run's task is cleared, so the cleared
        task takes over its earlier batch too. The oldest one not yet returned in this try is returned
        instead of creating a new one, so the n-th call of a try gets the n-th batch of the try before.
        ``reuse_earlier_batch=False`` always creates. Outside a task, nothing is looked for. A page that
        fails on a transient error is read again (up to three reads, even with max_retry_count 0); one
        that still cannot be read fails the try (an error Airflow retries) unless a batch already read
        fits, rather than risk a second batch; a list the gateway does not serve (404, 405) is a warning,
        and the batch is created.

        Every batch carries ``airflow_deployment`` (:func:`airflow_psopenai.run_tags.deployment`), and each
        call a nonce of its own (``airflow_create_nonce``): a gateway that sent the create again after its
        answer was lost upstream made two batches for it; right after the answer, the newest page of the
        batch list is read (within the create's timeout) and every batch with the nonce but the one
        returned is cancelled, logged as a duplicate. A duplicate that appears later is left to
        :class:`~airflow_psopenai.operators.StopOrphanedBatchesOperator`. With the run tags, the deployment
        and the nonce, 10 of the 16 metadata pairs are left for your own keys (11 when not mapped).

        :param input_file_id: ID of a JSONL file uploaded with ``purpose="batch"``.
        :param endpoint: The endpoint every request of the file goes to (``/v1/responses``, ``/v1/embeddings``, ...).
        :param completion_window: How long the batch may take.
        :param metadata: Your own text keys and values, merged with the run tags (at most 16 pairs in all).
        :param reuse_earlier_batch: Return a batch an earlier try created instead of creating another.
        :return: The batch object, as the API returns it.
        :raises PSOpenAIConfigurationError: Before the request, when the metadata is over the API's limits.
        :raises PSOpenAIError: When part of the list that could hold an earlier try's batch cannot be read.
        """
        settings = self.settings
        body: JsonObject = {
            "input_file_id": require_id("input_file_id", input_file_id),
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        task_try = current_try()
        tags = task_try.tags if task_try is not None else {DEPLOYMENT_KEY: deployment()}
        nonce = secrets.token_hex(16)
        tagged = tagged_metadata({**tags, CREATE_NONCE_KEY: nonce}, metadata)
        body["metadata"] = tagged
        if task_try is not None and reuse_earlier_batch:
            own = TaskTry.own_tags({key: tagged[key] for key in tags})

            def fits(item: Mapping[str, Any]) -> bool:
                return (
                    status_of(item) in REUSABLE_BATCH_STATUSES
                    and item.get("input_file_id") == body["input_file_id"]
                    and item.get("endpoint") == body["endpoint"]
                    and metadata_holds(item.get("metadata"), own)
                )

            earlier = task_try.take(BATCH.name, lambda: self._earlier_batches(task_try), fits)
            if earlier is not None:
                self.log.info(
                    "Batch %r (%s) was created by an earlier try of this task instance with the same input file "
                    "and endpoint: returning it instead of creating a second batch "
                    "(reuse_earlier_batch=False creates one).",
                    earlier["id"],
                    status_of(earlier),
                )
                return earlier
        created = self._request(
            "POST", settings.url("/batches"), headers=settings.headers({}), target="a new batch", body=body
        )
        self._cancel_duplicates(created, tagged[CREATE_NONCE_KEY])
        return created

    def _cancel_duplicates(self, created: JsonObject, nonce: str) -> None:
        """Cancel every batch but ``created`` that carries the create's ``nonce``: a retry on the way made it.

        Reads the newest page of the batch list only, within the create's timeout; never raises (the batch
        was created): a look or cancel that fails is a warning.
        """
        timeout = self.settings.timeout_sec
        deadline = Deadline.budget(timeout if timeout > 0 else DUPLICATE_LOOK_SEC)
        listed = walk_list(
            lambda after, page_deadline: self.list_page(
                BATCH, after=after, page_size=REUSE_PAGE_SIZE, deadline=page_deadline
            ),
            BATCH,
            self.settings.redact,
            metadata={CREATE_NONCE_KEY: nonce},
            since=None,
            deadline=deadline,
            max_pages=1,
        )
        if isinstance(listed.unread, PSOpenAIAPIError) and listed.unread.http_status in LIST_NOT_SERVED:
            return
        if listed.unread is not None:
            self.log.warning("Could not look for a duplicate of batch %r: %s", created.get("id"), listed.unread)
        for item in listed.found:
            if item["id"] == created.get("id") or status_of(item) not in BATCH.cancellable:
                continue
            self.log.warning(
                "Batch %r is a duplicate of batch %r, made by a retry of its create between here and the API "
                "(a gateway's): cancelling it.",
                item["id"],
                created.get("id"),
            )
            try:
                self.cancel_object(BATCH, {"batch_id": item["id"]}, deadline=deadline)
            except PSOpenAIError as error:
                self.log.warning("Could not cancel the duplicate batch %r: %s", item["id"], error)

    def _earlier_batches(self, task_try: TaskTry) -> Earlier:
        """Return the batches created since the DAG run's ``run_after`` (less the cutoff margin), oldest first.

        At most ``REUSE_MAX_PAGES`` pages are read: past them a warning says so. A list the gateway does not
        serve (404, 405) is a warning, and nothing is taken over; any other page that cannot be read is kept
        as :attr:`Earlier.unread`, which fails the try when no batch read fits.
        """
        since = None if task_try.run_after is None else as_epoch_seconds(task_try.run_after, "run_after")
        listed = walk_list(
            lambda after, deadline: self.list_page(BATCH, after=after, page_size=REUSE_PAGE_SIZE, deadline=deadline),
            BATCH,
            self.settings.redact,
            metadata={},
            since=since,
            max_pages=REUSE_MAX_PAGES,
        )
        earlier = Earlier(listed.found[::-1])
        if listed.capped:
            self.log.warning(
                "Looked for batches earlier tries of this task created in the newest %d batches of the account "
                "without reaching the DAG run's start: older ones are not taken over.",
                REUSE_MAX_PAGES * REUSE_PAGE_SIZE,
            )
        elif isinstance(listed.unread, PSOpenAIAPIError) and listed.unread.http_status in LIST_NOT_SERVED:
            # The list only finds an earlier try's batch: a gateway that does not serve it must not keep the
            # task from creating its batch.
            self.log.warning(
                "Could not look for a batch an earlier try of this task created, so creating one: %s", listed.unread
            )
        elif listed.unread is not None:
            earlier.unread = PSOpenAIError(
                "Could not look for a batch an earlier try of this task created: could not read "
                f"{listed.what_was_not_read(BATCH.label)}. This try fails rather than risk creating a second "
                "batch; Airflow's retry looks again."
            )
        return earlier

    def create_fine_tuning_job(
        self,
        model: str,
        training_file: str,
        *,
        validation_file: str | None = None,
        method: Mapping[str, Any] | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        integrations: list[Mapping[str, Any]] | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        reuse_earlier_job: bool = True,
        **more: Any,
    ) -> JsonObject:
        """Create a fine-tuning job (not retried: it is not idempotent, and a job bills per trained token).

        Called in a running task, the job's metadata gets the run tags (:func:`~airflow_psopenai.run_tags.run_tags`;
        your own keys win). A retry pays for no second job: in a running task, the jobs an earlier try of the
        same task instance created (the same run tags, the same map index or none, the same ``model`` and
        ``training_file``, not failed or cancelled) are looked for first, in the job list filtered by the run
        tags on the server (one request for a run that created fewer than 100 jobs), down to the DAG run's
        ``run_after`` less the cutoff margin, as :meth:`create_batch` does for batches; the oldest one not yet
        returned in this try is returned instead of creating a new one. ``reuse_earlier_job=False`` always
        creates. A page that still cannot be read fails the try unless a job already read fits.

        :param model: The model to fine-tune.
        :param training_file: ID of an uploaded file with ``purpose="fine-tune"``.
        :param validation_file: ID of an uploaded validation file.
        :param method: The fine-tuning method (``{"type": "supervised", "supervised": {...}}``, ``dpo``, ...).
        :param suffix: Up to 64 characters added to the fine-tuned model's name.
        :param seed: Makes the job reproducible.
        :param integrations: Integrations of the job (Weights and Biases, ...).
        :param hyperparameters: The API's older way to give them (deprecated in favour of ``method``).
        :param metadata: Your own text keys and values, merged with the run tags (at most 16 pairs in all).
        :param reuse_earlier_job: Return a job an earlier try created instead of creating another.
        :param more: Any other create parameter of the API, sent as given.
        :return: The job object, as the API returns it.
        :raises PSOpenAIConfigurationError: Before the request, when the metadata is over the API's limits.
        :raises PSOpenAIError: When part of the list that could hold an earlier try's job cannot be read.
        """
        settings = self.settings
        body: JsonObject = {"model": model, "training_file": require_id("training_file", training_file), **more}
        optional = {
            "validation_file": validation_file,
            "method": method,
            "suffix": suffix,
            "seed": seed,
            "integrations": integrations,
            "hyperparameters": hyperparameters,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        task_try = current_try()
        tags = task_try.tags if task_try is not None else {}
        tagged = tagged_metadata(tags, metadata)
        if tagged:
            body["metadata"] = tagged
        if task_try is not None and reuse_earlier_job:
            own = TaskTry.own_tags({key: tagged[key] for key in tags})

            def fits(item: Mapping[str, Any]) -> bool:
                return (
                    status_of(item) in REUSABLE_FINE_TUNING_JOB_STATUSES
                    and item.get("model") == model
                    and item.get("training_file") == body["training_file"]
                    and metadata_holds(item.get("metadata"), own)
                )

            server_filter = {key: value for key, value in own.items() if value is not None}
            earlier = task_try.take(
                FINE_TUNING_JOB.name, lambda: self._earlier_fine_tuning_jobs(task_try, server_filter), fits
            )
            if earlier is not None:
                self.log.info(
                    "Fine-tuning job %r (%s) was created by an earlier try of this task instance with the same "
                    "model and training file: returning it instead of creating a second job "
                    "(reuse_earlier_job=False creates one).",
                    earlier["id"],
                    status_of(earlier),
                )
                return earlier
        return self._request(
            "POST",
            settings.url(FINE_TUNING_JOB.list_path or ""),
            headers=settings.headers({}),
            target="a new fine-tuning job",
            body=body,
        )

    def _earlier_fine_tuning_jobs(self, task_try: TaskTry, server_filter: Mapping[str, str]) -> Earlier:
        """Return the jobs with ``server_filter``'s metadata created since the DAG run's ``run_after``, oldest first.

        The server filters the list by metadata, so the run's own jobs are all there is to read.
        """
        since = None if task_try.run_after is None else as_epoch_seconds(task_try.run_after, "run_after")
        listed = walk_list(
            lambda after, deadline: self.list_page(
                FINE_TUNING_JOB, after=after, page_size=REUSE_PAGE_SIZE, deadline=deadline, metadata=server_filter
            ),
            FINE_TUNING_JOB,
            self.settings.redact,
            metadata={},
            since=since,
            max_pages=REUSE_MAX_PAGES,
        )
        earlier = Earlier(listed.found[::-1])
        if listed.unread is not None or listed.capped:
            earlier.unread = PSOpenAIError(
                "Could not look for a fine-tuning job an earlier try of this task created: could not read "
                f"{listed.what_was_not_read(FINE_TUNING_JOB.label)}. This try fails rather than risk creating a "
                "second job; Airflow's retry looks again."
            )
        return earlier

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

    def _attempt(self, call: _Call, time_left: float | None) -> JsonObject:
        """Send ``call`` once on the synchronous client; ``time_left``: the seconds it may take (a wait's rest)."""
        if time_left is not None and time_left <= 0:
            raise budget_spent(settings=call.settings, target=call.target)
        return self._request(
            call.method,
            call.url,
            headers=call.headers,
            target=call.target,
            assistants_api=call.resource.assistants_api,
            time_left=time_left,
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
        time_left: float | None = None,
    ) -> JsonObject:
        """Send one request on the synchronous client and return its JSON object, or raise this provider's error.

        :param time_left: Seconds this attempt may take (a wait's remaining time), on top of the settings' timeouts.
        """
        settings = self.settings
        request = self.client.build_request(
            method, url, headers=headers, json=body, timeout=settings.timeout(time_left)
        )
        try:
            response = self.client.send(request, stream=True)
            try:
                response.read()
            except httpx.DecodingError as error:
                raise unreadable_body(response, error, settings=settings, target=target) from None
            finally:
                response.close()
        except httpx.TransportError as error:
            # Not chained: httpx's own text may quote a header; the redacted message says what it said.
            raise transport_error(error, settings=settings, target=target, time_left=time_left) from None
        return self._parse(response, settings, target=target, assistants_api=assistants_api)

    async def _aattempt(self, call: _Call, time_left: float | None) -> JsonObject:
        """Send ``call`` once on the event loop's shared pool."""
        settings = call.settings
        if time_left is not None and time_left <= 0:
            raise budget_spent(settings=settings, target=call.target)
        try:
            response = await shared_pool(settings.proxy).request(
                call.method, call.url, headers=call.headers, timeout=settings.timeout(time_left)
            )
        except httpx.TransportError as error:
            raise transport_error(error, settings=settings, target=call.target, time_left=time_left) from None
        except TLSContextError as error:
            raise tls_context_error(error, settings=settings) from None
        except UnreadableBodyError as error:
            raise unreadable_body(error.response, error.error, settings=settings, target=call.target) from None
        return self._parse(response, settings, target=call.target, assistants_api=call.resource.assistants_api)

    async def _asend(
        self, call: _Call, deadline: Deadline, attempt: Callable[[float | None], Awaitable[JsonObject]]
    ) -> JsonObject:
        """Await ``attempt`` with the retry policy, all of it bounded by ``deadline``."""
        assert self._retry_policy is not None
        if deadline.spent():
            raise budget_spent(settings=call.settings, target=call.target)
        try:
            # Also bounds the wait for a free connection of the shared pool, which no httpx timeout covers.
            async with asyncio.timeout(deadline.poll_limit()):
                return await self._retry_policy.acall(attempt, deadline)
        except TimeoutError:
            raise PSOpenAITransportError(
                f"The request to {call.settings.api_base} for {call.target} timed out (its deadline).",
                lost_answer=True,
            ) from None

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
            raise invalid_success_body(response, settings=settings, target=target)
        return body


class _Cancel:
    """One cancel and its retries: whether an attempt may have gone through although its answer was lost."""

    def __init__(self, settings: ApiSettings, resource: CancellableResource, ids: Mapping[str, str], log: Any) -> None:
        self.resource = resource
        self.ids = ids
        self.post = _Call.on_object(settings, resource.cancel_method, resource, ids, "cancel")
        self.check = _Call.on_object(settings, "GET", resource, ids, "get")
        self.maybe_sent = False
        self._log = log

    def failed(self, error: PSOpenAIError) -> None:
        """Note a failed attempt: a timeout, a dropped or garbled answer or a 5xx may come after the API acted."""
        if answer_may_be_lost(error):
            self.maybe_sent = True

    def refusal(self, error: PSOpenAIAPIError) -> PSOpenAIError:
        """Return the error to raise for an API error, unless it is a refusal worth checking (then return it)."""
        refusal = _cannot_cancel(self.resource, self.ids, error)
        if not (self.maybe_sent and isinstance(refusal, PSOpenAICannotCancelError)):
            raise refusal from None
        return refusal

    @overload
    def went_through(self, current: JsonObject) -> JsonObject | None: ...

    @overload
    def went_through(self, current: JsonObject, refusal: PSOpenAIError) -> JsonObject: ...

    def went_through(self, current: JsonObject, refusal: PSOpenAIError | None = None) -> JsonObject | None:
        """Return ``current`` if it shows an earlier attempt's cancel went through; else None (or raise ``refusal``)."""
        status = status_of(current)
        if status not in self.resource.cancel_requested:
            if refusal is not None:
                raise refusal
            return None
        self._log.info(
            "The answer to an earlier attempt to cancel %s was lost, but that cancel went through: it is %s.",
            self.resource.describe(self.ids),
            status,
        )
        return current


def _checked_ids(resource: CancellableResource, ids: Mapping[str, object]) -> dict[str, str]:
    return {name: require_id_of(resource, name, ids.get(name)) for name in resource.id_fields}


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
