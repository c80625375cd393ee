"""Cancelling a set of batches: selecting them, cancelling each at most once, concurrently, and reporting.

Shared by :class:`~airflow_psopenai.operators.StopBatchesOperator` and the safety-net callback
:func:`~airflow_psopenai.callbacks.cancel_run_batches`. Every batch is attempted: one batch's
failure never stops the others. Runs in the worker (or the DAG processor), in an event loop of its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_psopenai.cancelling.cancel import Action, cancel_one
from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.client.listing import ListWalk
from airflow_psopenai.client.validation import require_epoch_seconds
from airflow_psopenai.resources import BATCH, status_of
from airflow_psopenai.waiting.status_board import status_poller

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_psopenai.cancelling.cancel import CancelPolicy
    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.hooks.psopenai import JsonObject

PAGE_SIZE = 100

# What was done to one batch, as its line says it.
CANCEL_SENT = Action.SENT.value
NOTHING_TO_DO = Action.NOT_CANCELLABLE.value
NOT_ATTEMPTED = Action.NOT_ATTEMPTED.value
FAILED = Action.FAILED.value


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
        found = self.found or "unknown"  # a forced first try sends without looking
        if self.error is not None:
            return f"batch {self.batch_id!r}: found {found}, {self.action}: {self.error}"
        return f"batch {self.batch_id!r}: found {found}, {self.action}, now {self.status}"


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
    from airflow_psopenai.waiting.waits import run_in_worker

    if created_after is not None:  # refused before the connection is looked up
        require_epoch_seconds(created_after, "created_after")
    return run_in_worker(hook, lambda: abatches_by_metadata(hook, metadata, created_after, log, deadline=deadline))


async def abatches_by_metadata(
    hook: PSOpenAIHook,
    metadata: Mapping[str, str],
    created_after: float | None,
    log: Any,
    *,
    deadline: Deadline = NO_DEADLINE,
) -> list[dict[str, Any]]:
    """Return every batch whose metadata holds all of ``metadata``, newest first, each once, without blocking
    the event loop.

    The list is read page by page (newest first) and stops at the first batch created before
    ``created_after`` (epoch seconds; the API's ``created_at`` is whole seconds, so the cut is at the
    second before): batches of older runs are never scanned.

    :param deadline: Bounds the whole listing: each page and retry gets only what is left.
    :raises PSOpenAIInvalidResponseError: For a list that repeats itself or a malformed page.
    :raises PSOpenAIConfigurationError: For a ``created_after`` that is not a finite number.
    """
    cutoff = None if created_after is None else int(require_epoch_seconds(created_after, "created_after")) - 1
    walk = ListWalk(BATCH, (await hook.asettings()).redact)
    found: list[dict[str, Any]] = []
    scanned = 0
    after: str | None = None
    while True:
        page = await hook.alist_page(BATCH, after=after, page_size=PAGE_SIZE, deadline=deadline)
        items = walk.read(page, after)
        older = [item for item in items if _created_before(item, cutoff)]
        for item in items[: items.index(older[0])] if older else items:
            scanned += 1
            held = item.get("metadata")
            held = held if isinstance(held, dict) else {}
            if all(held.get(key) == value for key, value in metadata.items()):
                found.append(item)
        if older or (after := walk.next_after(page)) is None:
            break
    log.info("Listed %d batches (%d pages): %d match the metadata %s.", scanned, walk.pages, len(found), dict(metadata))
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
    ``if_not_cancellable`` ``fail`` counts a batch as failed, ``succeed`` and ``skip`` do not. A batch given
    twice is one batch. Under a budget (``deadline``), a batch whose requests could not start in time is
    reported as not attempted (and counts as failed).
    """
    slots = asyncio.Semaphore(max_concurrency)
    unique = dict.fromkeys(batch_ids)
    return list(await asyncio.gather(*(_cancel_one(hook, batch_id, policy, deadline, slots) for batch_id in unique)))


async def _cancel_one(
    hook: PSOpenAIHook, batch_id: str, policy: CancelPolicy, deadline: Deadline, slots: asyncio.Semaphore
) -> BatchOutcome:
    ids = {"batch_id": batch_id}
    result = await cancel_one(
        hook, BATCH, ids, policy, deadline=deadline, look=lambda: _look(hook, ids, deadline, slots), slots=slots
    )
    error = None if result.error is None else result.message
    return BatchOutcome(batch_id, result.found, result.action.value, result.obj, error)


async def _look(hook: PSOpenAIHook, ids: Mapping[str, str], deadline: Deadline, slots: asyncio.Semaphore) -> JsonObject:
    """Return a batch as it is now, read with the set's other looks from the list's pages where they hold it.

    The looks of a set go through the status board the waits use, so fresh batches cost about one list
    page per 100 instead of a GET each. A page lost to a transient error leaves each of its looks to its
    own GET rather than failing the whole set for one answer; a look's own GET is not sent again.
    """
    async with status_poller(hook, BATCH, ids, own_get_slots=slots, own_get_on_page_error=True) as poll:
        return await poll(0.0, deadline)
