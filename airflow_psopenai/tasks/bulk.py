"""Cancelling a set of batches: selecting them, cancelling each at most once, concurrently, and reporting.

Shared by :class:`~airflow_psopenai.operators.StopBatchesOperator` and the safety-net callback
:func:`~airflow_psopenai.callbacks.cancel_run_batches`. Every batch is attempted: one batch's
failure never stops the others. Runs in the worker (or the DAG processor), in an event loop of its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.exceptions import PSOpenAICannotCancelError, PSOpenAIError
from airflow_psopenai.resources import BATCH, status_of
from airflow_psopenai.tasks.cancel import ALREADY_REQUESTED_TEXT, Step
from airflow_psopenai.tasks.status_board import status_poller

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.hooks.psopenai import JsonObject
    from airflow_psopenai.tasks.cancel import CancelPolicy

PAGE_SIZE = 100

# What was done to one batch.
CANCEL_SENT = "cancel requested"
ALREADY_REQUESTED = f"no second cancel ({ALREADY_REQUESTED_TEXT})"
NOTHING_TO_DO = "nothing to cancel"
FAILED = "failed"


@dataclass
class BatchOutcome:
    """One batch of the set: its status before, what was done, the object after, or why it failed."""

    batch_id: str
    found: str | None = None
    action: str = FAILED
    obj: dict[str, Any] | None = None
    error: str | None = None

    @property
    def status(self) -> str | None:
        """Return the batch's latest known status."""
        return None if self.obj is None else status_of(self.obj)

    def line(self) -> str:
        """Return the batch's log line: ID, status found, what was done, final status (or the error)."""
        if self.error is not None:
            return f"batch {self.batch_id!r}: found {self.found or 'unknown'}, {self.action}: {self.error}"
        return f"batch {self.batch_id!r}: found {self.found}, {self.action}, now {self.status}"


def batches_by_metadata(
    hook: PSOpenAIHook,
    metadata: Mapping[str, str],
    created_after: float | None,
    log: Any,
    *,
    deadline: Deadline = NO_DEADLINE,
) -> list[dict[str, Any]]:
    """Return every batch whose metadata holds all of ``metadata``, newest first (in the worker).

    :func:`abatches_by_metadata` in an event loop of its own; the connection is looked up synchronously.
    """
    from airflow_psopenai.tasks.waits import run_in_worker

    return run_in_worker(hook, lambda: abatches_by_metadata(hook, metadata, created_after, log, deadline=deadline))


async def abatches_by_metadata(
    hook: PSOpenAIHook,
    metadata: Mapping[str, str],
    created_after: float | None,
    log: Any,
    *,
    deadline: Deadline = NO_DEADLINE,
) -> list[dict[str, Any]]:
    """Return every batch whose metadata holds all of ``metadata``, newest first, without blocking the loop.

    The list is read page by page (newest first) and stops at the first batch created before
    ``created_after`` (epoch seconds; the API's ``created_at`` is whole seconds, so the cut is at the
    second before): batches of older runs are never scanned. ``deadline`` bounds each page and its retries.
    """
    cutoff = None if created_after is None else int(created_after) - 1
    found: list[dict[str, Any]] = []
    pages = scanned = 0
    after: str | None = None
    while True:
        page = await hook.alist_page(BATCH, after=after, limit=PAGE_SIZE, deadline=deadline)
        pages += 1
        items = [item for item in page.get("data") or [] if isinstance(item, dict)]
        older = [item for item in items if _created_before(item, cutoff)]
        for item in items[: items.index(older[0])] if older else items:
            scanned += 1
            held = item.get("metadata")
            held = held if isinstance(held, dict) else {}
            if all(held.get(key) == value for key, value in metadata.items()):
                found.append(item)
        if older or not page.get("has_more") or not items:
            break
        after = str(items[-1].get("id"))
    log.info("Listed %d batches (%d pages): %d match the metadata %s.", scanned, pages, len(found), dict(metadata))
    return found


def _created_before(item: Mapping[str, Any], cutoff: int | None) -> bool:
    created_at = item.get("created_at")
    return cutoff is not None and isinstance(created_at, int | float) and created_at < cutoff


async def cancel_each(
    hook: PSOpenAIHook,
    batch_ids: Sequence[str],
    policy: CancelPolicy,
    *,
    max_concurrency: int,
    deadline: Deadline = NO_DEADLINE,
) -> list[BatchOutcome]:
    """Cancel every batch (at most ``max_concurrency`` GETs and cancels at once, besides the looks' list
    pages); return their outcomes in order.

    Each batch is treated as :class:`~airflow_psopenai.operators.StopBatchOperator` treats one (``policy``);
    ``if_not_cancellable`` ``fail`` counts a batch as failed, ``succeed`` and ``skip`` do not.
    """
    slots = asyncio.Semaphore(max_concurrency)
    return list(await asyncio.gather(*(_cancel_one(hook, batch_id, policy, deadline, slots) for batch_id in batch_ids)))


async def _cancel_one(
    hook: PSOpenAIHook, batch_id: str, policy: CancelPolicy, deadline: Deadline, slots: asyncio.Semaphore
) -> BatchOutcome:
    outcome = BatchOutcome(batch_id)
    ids = {"batch_id": batch_id}
    try:
        if policy.looks_first:
            current = await _look(hook, ids, deadline, slots)
            outcome.found = status_of(current)
            outcome.obj = current
            step = policy.step(BATCH, current)
            if step is Step.ALREADY_REQUESTED:
                outcome.action = ALREADY_REQUESTED
                return outcome
            if step is Step.NOT_CANCELLABLE:
                return _not_cancellable(outcome, policy, f'cannot cancel a batch with status "{outcome.found}"')
        try:
            async with slots:
                outcome.obj = await hook.acancel_object(BATCH, ids, deadline=deadline)
        except PSOpenAICannotCancelError as error:
            # Refused as already cancelled (a forced cancel has not looked): maybe this task's own earlier cancel.
            async with slots:
                outcome.obj = await hook.aget_object(BATCH, ids, deadline=deadline)
            outcome.found = outcome.found or status_of(outcome.obj)
            if error.status in BATCH.cancel_requested and policy.step(BATCH, outcome.obj) is Step.ALREADY_REQUESTED:
                outcome.action = ALREADY_REQUESTED
                return outcome
            return _not_cancellable(outcome, policy, str(error))
        outcome.action = CANCEL_SENT
    except PSOpenAIError as error:
        outcome.action, outcome.error = FAILED, str(error)
    return outcome


async def _look(hook: PSOpenAIHook, ids: Mapping[str, str], deadline: Deadline, slots: asyncio.Semaphore) -> JsonObject:
    """Return a batch as it is now, read with the set's other looks from the list's pages where they hold it.

    The looks of a set go through the status board the waits use, so fresh batches cost about one list
    page per 100 instead of a GET each. A page lost to a transient error leaves each of its looks to its
    own GET rather than failing the whole set for one answer; a look's own GET is not sent again.
    """
    async with status_poller(hook, BATCH, ids, own_get_slots=slots, own_get_on_page_error=True) as poll:
        return await poll(0.0, deadline)


def _not_cancellable(outcome: BatchOutcome, policy: CancelPolicy, reason: str) -> BatchOutcome:
    if policy.if_not_cancellable == "fail":
        outcome.action, outcome.error = FAILED, f"{reason} (if_not_cancellable='fail')"
    else:
        outcome.action = NOTHING_TO_DO
    return outcome
