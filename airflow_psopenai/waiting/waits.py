"""The one wait for a settled status, for the trigger (in the triggerer) and for a wait in the worker.

Every poll gets the time left until the deadline as its limit, retries included (the hook's
``deadline``), so neither a hanging server nor the hook's backoff holds a wait past it; a poll is
made at the deadline itself. Batch polls go through the event loop's status board, which answers
many waits from one list page. The worker runs this same loop in an event loop of its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_psopenai.client.pool import aclose_shared_clients
from airflow_psopenai.client.retry import is_retryable
from airflow_psopenai.exceptions import PSOpenAIError
from airflow_psopenai.waiting.events import EVENT_ERROR, EVENT_TIMEOUT, failure_event, settled_event
from airflow_psopenai.waiting.polling import UNNAMED_DEADLINE, StatusWatch, poll_delays
from airflow_psopenai.waiting.status_board import status_poller

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from airflow_psopenai.client.deadline import Deadline
    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.resources import CancellableResource

_T = TypeVar("_T")


async def wait_until_settled(
    hook: PSOpenAIHook,
    resource: CancellableResource,
    ids: Mapping[str, str],
    *,
    poll_interval: float,
    deadline: Deadline,
    deadline_name: str,
    log: Any,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Poll until the object is settled, the deadline passes or a permanent error occurs; return the event.

    :param deadline_name: How timeout messages name the deadline ("its wait_timeout of 60 s").
    :param log: A logger with ``info`` and ``warning``.
    :param started_at: When the wait began (epoch seconds; default now): each logged status and the
        settled event say the seconds since.
    :returns: A settled, timeout or error event (see :mod:`airflow_psopenai.waiting.events`).
    """
    watch = StatusWatch(resource, ids, log, started_at)
    delays = poll_delays(poll_interval)
    last: dict[str, Any] | None = None
    delay = 0.0
    async with status_poller(hook, resource, ids) as poll:
        while True:
            try:
                last = await poll(delay, deadline)
            except PSOpenAIError as error:
                if not is_retryable(error):
                    return failure_event(EVENT_ERROR, str(error))
                delay = watch.transient(error, next(delays))
            else:
                if watch.observe(last):
                    return settled_event(resource, ids, last, watch.elapsed())
                delay = next(delays)
            if deadline.passed():
                return failure_event(EVENT_TIMEOUT, watch.timeout_message(deadline_name), last)


async def wait_for_each(
    hook: PSOpenAIHook,
    resource: CancellableResource,
    id_sets: Sequence[Mapping[str, str]],
    *,
    poll_interval: float,
    deadline: Deadline,
    log: Any,
    deadline_name: str = UNNAMED_DEADLINE,
) -> list[dict[str, Any]]:
    """Wait for every object of a set at once, with one deadline; return each one's event, in order.

    :param deadline_name: How timeout messages name the deadline.
    """
    return list(
        await asyncio.gather(
            *(
                wait_until_settled(
                    hook,
                    resource,
                    ids,
                    poll_interval=poll_interval,
                    deadline=deadline,
                    deadline_name=deadline_name,
                    log=log,
                )
                for ids in id_sets
            )
        )
    )


def run_in_worker(hook: PSOpenAIHook, wait: Callable[[], Awaitable[_T]]) -> _T:
    """Run an async wait (``wait()``, such as :func:`wait_until_settled`) to its end in the worker.

    The connection is looked up synchronously first, as tasks do; the event loop's connections are
    closed at the end.
    """
    _ = hook.settings

    async def run() -> _T:
        try:
            return await wait()
        finally:
            await aclose_shared_clients()

    return asyncio.run(run())
