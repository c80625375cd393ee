"""Cancelling a set of batches: selecting them, cancelling each at most once, concurrently, and reporting.

Shared by :class:`~airflow_psopenai.operators.StopBatchesOperator` and the safety-net callback
:func:`~airflow_psopenai.callbacks.cancel_run_batches`. Every batch is attempted: one batch's
failure never stops the others. Runs in the worker (or the DAG processor), in an event loop of its own.
Within a process, one cancel of a batch is under way at a time, whichever set or cleanup sends it.
The selection by metadata is the listing walk of :mod:`airflow_psopenai.client.listing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_psopenai.cancelling.cancel import Action, cancel_one
from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.client.listing import Listed, awalk_list
from airflow_psopenai.client.validation import require_epoch_seconds
from airflow_psopenai.resources import BATCH, FINE_TUNING_JOB, counted, status_of
from airflow_psopenai.run_tags import (
    DEPLOYMENT_KEY,
    OTHER,
    UNTAGGED,
    deployment,
    deployment_match,
    is_run_selector,
    run_selector,
)
from airflow_psopenai.waiting.status_board import status_poller

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from airflow_psopenai.cancelling.cancel import CancelPolicy
    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.hooks.psopenai import JsonObject
    from airflow_psopenai.resources import CancellableResource

PAGE_SIZE = 100
# A run cleanup's listing gets at most this part of the time left; the cancels keep the rest.
LISTING_SHARE = 0.5
# A batch runs at most its 24 h completion window, then expires; an hour more for one that began
# finalizing at the window's end. A run cleanup reads no further back than this.
BATCH_LIFETIME_SEC = 25 * 3600.0

# What was done to one batch, as its line says it.
CANCEL_SENT = Action.SENT.value
NOTHING_TO_DO = Action.NOT_CANCELLABLE.value
NOT_ATTEMPTED = Action.NOT_ATTEMPTED.value
FAILED = Action.FAILED.value
# Why a batch that matched a run's selector was left out of it, or taken although untagged.
OTHER_DEPLOYMENT = "of another deployment left alone"
NO_DEPLOYMENT_TAG = "without a deployment tag included"
ANSWER_LOST = "cancel sent, its answer did not arrive (it may have gone through)"
CANCEL_UNDER_WAY = "no second cancel (another cancel of it in this process is under way)"


@dataclass
class BatchOutcome:
    """One batch of the set: its status before, what was done, the object after, or why it failed."""

    batch_id: str
    found: str | None = None
    action: str = FAILED
    obj: dict[str, Any] | None = None
    error: str | None = None
    label: str = BATCH.label

    @property
    def status(self) -> str | None:
        """Return the batch's latest known status."""
        return None if self.obj is None else status_of(self.obj)

    def line(self) -> str:
        """Return the batch's log line: ID, status found, what was done, final status (or the error)."""
        found = self.found or "unknown"  # a forced first try sends without looking
        if self.error is not None:
            return f"{self.label} {self.batch_id!r}: found {found}, {self.action}: {self.error}"
        return f"{self.label} {self.batch_id!r}: found {found}, {self.action}, now {self.status}"


def batches_by_metadata(
    hook: PSOpenAIHook,
    metadata: Mapping[str, str],
    created_after: float | None,
    log: Any,
    *,
    deadline: Deadline = NO_DEADLINE,
) -> list[dict[str, Any]]:
    """Return every batch whose metadata holds all of ``metadata``, newest first, each once (in the worker).

    :func:`abatches_by_metadata` in an event loop of its own; the connection is looked up synchronously.
    """
    listed = list_by_metadata(hook, metadata, created_after, log, deadline=deadline)
    if listed.unread is not None:
        raise listed.unread
    return listed.found


def list_by_metadata(
    hook: PSOpenAIHook,
    metadata: Mapping[str, str],
    created_after: float | None,
    log: Any,
    *,
    deadline: Deadline = NO_DEADLINE,
) -> Listed:
    """Return :func:`alist_by_metadata`'s listing, run in the worker in an event loop of its own."""
    from airflow_psopenai.waiting.waits import run_in_worker

    if created_after is not None:  # refused before the connection is looked up
        require_epoch_seconds(created_after, "created_after")
    return run_in_worker(hook, lambda: alist_by_metadata(hook, metadata, created_after, log, deadline=deadline))


async def abatches_by_metadata(
    hook: PSOpenAIHook,
    metadata: Mapping[str, str],
    created_after: float | None,
    log: Any,
    *,
    deadline: Deadline = NO_DEADLINE,
) -> list[dict[str, Any]]:
    """Return every batch whose metadata holds all of ``metadata``, newest first, each once, without blocking
    the event loop (:func:`alist_by_metadata`, whose listing must be whole).

    :raises PSOpenAIError: When part of the list could not be read (its pages' errors, a list that repeats
        itself or answers junk).
    :raises PSOpenAIConfigurationError: For a ``created_after`` that is not a finite number.
    """
    listed = await alist_by_metadata(hook, metadata, created_after, log, deadline=deadline)
    if listed.unread is not None:
        raise listed.unread
    return listed.found


async def alist_by_metadata(
    hook: PSOpenAIHook,
    metadata: Mapping[str, str],
    created_after: float | None,
    log: Any,
    *,
    deadline: Deadline = NO_DEADLINE,
) -> Listed:
    """List the batches whose metadata holds all of ``metadata``: newest first, each once, and what was not read.

    The list is read page by page (newest first) and stops at the first batch created before
    ``created_after`` (epoch seconds) less the cutoff margin (``[psopenai] cutoff_margin_sec``, 300 s: the
    API's clock may be behind this machine's): batches of older runs are never scanned. A page that
    fails on a transient error is read again (up to three reads, within ``deadline``); one that still
    cannot be read ends the listing, and the result keeps what was found before it.

    A selector of a DAG run (``airflow_dag_id`` and ``airflow_run_id``) without ``airflow_deployment``
    selects this deployment's batches of the run: another deployment's are left out, and those without
    a deployment tag kept, each counted in :attr:`Listed.set_apart`.

    :param deadline: Bounds the whole listing: each page and retry gets only what is left.
    :raises PSOpenAIConfigurationError: For a ``created_after`` that is not a finite number.
    """
    if created_after is not None:
        require_epoch_seconds(created_after, "created_after")
    redact = (await hook.asettings()).redact

    async def read_page(after: str | None, page_deadline: Deadline) -> dict[str, Any]:
        return await hook.alist_page(BATCH, after=after, page_size=PAGE_SIZE, deadline=page_deadline)

    listed = await awalk_list(read_page, BATCH, redact, metadata=metadata, since=created_after, deadline=deadline)
    ours = ""
    if is_run_selector(metadata) and DEPLOYMENT_KEY not in metadata:
        ours = deployment()
        keep_deployments_own(listed, ours)
    log.info(
        "Listed %s (%s): %d match the metadata %s%s%s.",
        counted(listed.scanned, "batch"),
        counted(listed.pages, "page"),
        len(listed.found),
        dict(metadata),
        f" for deployment {ours!r}" if ours else "",
        "".join(f", {count} {why}" for why, count in listed.set_apart.items()),
    )
    return listed


def keep_deployments_own(listed: Listed, ours: str) -> None:
    """Leave out of ``listed`` the objects another deployment tagged; count them, and the untagged ones kept."""
    kept: list[dict[str, Any]] = []
    for item in listed.found:
        match = deployment_match(item.get("metadata"), ours)
        if match == OTHER:
            listed.set_apart[OTHER_DEPLOYMENT] = listed.set_apart.get(OTHER_DEPLOYMENT, 0) + 1
            continue
        if match == UNTAGGED:
            listed.set_apart[NO_DEPLOYMENT_TAG] = listed.set_apart.get(NO_DEPLOYMENT_TAG, 0) + 1
        kept.append(item)
    listed.found = kept


async def alist_run_batches(
    hook: PSOpenAIHook, dag_id: str, run_id: str, run_after: float | None, log: Any, *, deadline: Deadline
) -> Listed:
    """List the batches tagged with one DAG run, for its cleanup, within a part of ``deadline``.

    The listing gets at most :data:`LISTING_SHARE` of the time left, so that the cancels of what it
    found keep the rest. It reads down to the run's ``run_after``, but never further back than
    :data:`BATCH_LIFETIME_SEC` ago: an older batch has ended (expired at the latest), and a cleanup
    only cancels running ones; a backfill's run of last year costs no more pages than a run of today.
    Both less the cutoff margin.
    """
    since = time.time() - BATCH_LIFETIME_SEC
    if run_after is not None:
        since = max(since, require_epoch_seconds(run_after, "run_after"))
    return await alist_by_metadata(
        hook, run_selector(dag_id, run_id), since, log, deadline=deadline.part(LISTING_SHARE)
    )


async def alist_run_fine_tuning_jobs(
    hook: PSOpenAIHook, dag_id: str, run_id: str, run_after: float | None, log: Any, *, deadline: Deadline
) -> Listed:
    """List the fine-tuning jobs tagged with one DAG run, for its cleanup, within a part of ``deadline``.

    The server filters the job list by the run's tags (``metadata[k]=v``), so the walk reads the run's own
    jobs only, down to its ``run_after`` less the cutoff margin; the tags are checked here too. The listing
    gets at most :data:`LISTING_SHARE` of the time left, as :func:`alist_run_batches`'s does.
    """
    since = None if run_after is None else require_epoch_seconds(run_after, "run_after")
    selector = run_selector(dag_id, run_id)
    redact = (await hook.asettings()).redact

    async def read_page(after: str | None, page_deadline: Deadline) -> dict[str, Any]:
        return await hook.alist_page(
            FINE_TUNING_JOB, after=after, page_size=PAGE_SIZE, deadline=page_deadline, metadata=selector
        )

    listed = await awalk_list(
        read_page, FINE_TUNING_JOB, redact, metadata=selector, since=since, deadline=deadline.part(LISTING_SHARE)
    )
    ours = deployment()
    keep_deployments_own(listed, ours)
    log.info(
        "Listed %s tagged with run %r for deployment %r (%s)%s.",
        counted(len(listed.found), "fine-tuning job"),
        run_id,
        ours,
        counted(listed.pages, "page"),
        "".join(f", {count} {why}" for why, count in listed.set_apart.items()),
    )
    return listed


async def cancel_each(
    hook: PSOpenAIHook,
    batch_ids: Sequence[str],
    policy: CancelPolicy,
    *,
    max_concurrency: int,
    deadline: Deadline = NO_DEADLINE,
    resource: CancellableResource = BATCH,
) -> list[BatchOutcome]:
    """Cancel every batch (at most ``max_concurrency`` GETs and cancels at once, besides the looks' list
    pages); return their outcomes in order.

    Each batch is treated as :class:`~airflow_psopenai.operators.StopBatchOperator` treats one (``policy``);
    ``if_not_cancellable`` ``fail`` counts a batch as failed, ``succeed`` and ``skip`` do not. A batch given
    twice is one batch. Under a budget (``deadline``), a batch whose requests could not start in time is
    reported as not attempted (and counts as failed); a cancel sent whose answer did not arrive in time as
    :data:`ANSWER_LOST`. A batch another set or cleanup of this process is cancelling now gets no second
    cancel (:data:`CANCEL_UNDER_WAY`).

    :param resource: What the IDs are of: batches, or another resource with one ID field (fine-tuning jobs).
    """
    slots = asyncio.Semaphore(max_concurrency)
    unique = dict.fromkeys(batch_ids)
    return list(
        await asyncio.gather(
            *(_cancel_one(hook, batch_id, policy, deadline, slots, resource=resource) for batch_id in unique)
        )
    )


async def _cancel_one(
    hook: PSOpenAIHook,
    batch_id: str,
    policy: CancelPolicy,
    deadline: Deadline,
    slots: asyncio.Semaphore,
    *,
    resource: CancellableResource,
) -> BatchOutcome:
    ids = {resource.id_fields[0]: batch_id}
    with _UNDER_WAY.claim((await hook.asettings()).api_base, batch_id) as ours:
        if not ours:
            return BatchOutcome(batch_id, action=CANCEL_UNDER_WAY, label=resource.label)
        result = await cancel_one(
            hook,
            resource,
            ids,
            policy,
            deadline=deadline,
            look=lambda: _look(hook, resource, ids, deadline, slots),
            slots=slots,
        )
    error = None if result.error is None else result.message
    action = ANSWER_LOST if result.answer_lost else result.action.value
    return BatchOutcome(batch_id, result.found, action, result.obj, error, resource.label)


class _UnderWay:
    """The batches this process is cancelling now, by API base and ID, for every set and cleanup of it.

    Two cleanups of one run at once (two callbacks, a callback and the listener, in one event loop or in
    threads) each find the same batches: the first to reach a batch looks at it and cancels it, the other
    sends nothing for it. A cleanup that comes after finds it cancelling.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: set[tuple[str, str]] = set()

    @contextlib.contextmanager
    def claim(self, api_base: str, batch_id: str) -> Iterator[bool]:
        """Hold the batch while its look and cancel run; yield False when another holds it."""
        key = (api_base, batch_id)
        with self._lock:
            ours = key not in self._batches
            self._batches.add(key)
        try:
            yield ours
        finally:
            if ours:
                with self._lock:
                    self._batches.discard(key)


_UNDER_WAY = _UnderWay()


async def _look(
    hook: PSOpenAIHook,
    resource: CancellableResource,
    ids: Mapping[str, str],
    deadline: Deadline,
    slots: asyncio.Semaphore,
) -> JsonObject:
    """Return a batch as it is now, read with the set's other looks from the list's pages where they hold it.

    The looks of a set go through the status board the waits use, so fresh batches cost about one list
    page per 100 instead of a GET each. A page lost to a transient error leaves each of its looks to its
    own GET rather than failing the whole set for one answer; a look's own GET is not sent again.
    """
    async with status_poller(hook, resource, ids, own_get_slots=slots, own_get_on_page_error=True) as poll:
        return await poll(0.0, deadline)
