"""One async trigger, generic over the resource table, that waits until an object is settled."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_psopenai.exceptions import PSOpenAIError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.hooks.retry import is_retryable
from airflow_psopenai.resources import RESOURCES
from airflow_psopenai.waiting import (
    EVENT_ERROR,
    EVENT_TIMEOUT,
    Deadline,
    StatusWatch,
    failure_event,
    poll_delays,
    settled_event,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


class ResourceStatusTrigger(BaseTrigger):
    """Poll an object until its status is settled, the deadline passes, or a permanent error occurs.

    Serialises only the resource name, the IDs, the connection id, the hook's overrides, the poll
    interval and an absolute deadline: never a key or a header.

    :param resource: Name of an entry of :data:`airflow_psopenai.resources.RESOURCES`.
    :param ids: The object's IDs (``{"batch_id": ...}``).
    :param conn_id: Connection to look up (asynchronously) in the triggerer.
    :param hook_kwargs: The hook's overrides (api_base, organization, timeout_sec, max_retry_count).
    :param poll_interval: Seconds between polls (the first polls come sooner).
    :param deadline: Epoch seconds after which the wait ends with a timeout event; None for no deadline.
    """

    def __init__(
        self,
        *,
        resource: str,
        ids: Mapping[str, str],
        conn_id: str,
        hook_kwargs: Mapping[str, Any] | None = None,
        poll_interval: float = 1.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is untyped
        if resource not in RESOURCES:
            raise ValueError(f"Unknown resource {resource!r}; known: {', '.join(RESOURCES)}.")
        self.resource = resource
        self.ids = dict(ids)
        self.conn_id = conn_id
        self.hook_kwargs = dict(hook_kwargs or {})
        self.poll_interval = float(poll_interval)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and JSON-plain keyword arguments."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "resource": self.resource,
                "ids": self.ids,
                "conn_id": self.conn_id,
                "hook_kwargs": self.hook_kwargs,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll, awaiting every call, and yield exactly one event."""
        resource = RESOURCES[self.resource]
        hook = PSOpenAIHook(self.conn_id, **self.hook_kwargs)
        watch = StatusWatch(resource, self.ids, self.log)
        deadline = Deadline(self.deadline)
        delays = poll_delays(self.poll_interval)
        last: dict[str, Any] | None = None
        while True:
            try:
                # The deadline also bounds a call hanging with timeout_sec=0 (no task per poll, unlike wait_for).
                async with asyncio.timeout(deadline.poll_limit()):
                    last = await hook.aget_object(resource, self.ids)
            except (PSOpenAIError, TimeoutError) as error:
                if isinstance(error, PSOpenAIError) and not is_retryable(error):
                    yield TriggerEvent(failure_event(EVENT_ERROR, str(error)))
                    return
                delay = watch.transient(error, next(delays))
            else:
                if watch.observe(last):
                    yield TriggerEvent(settled_event(resource, self.ids, last))
                    return
                delay = next(delays)
            if deadline.passed():
                yield TriggerEvent(failure_event(EVENT_TIMEOUT, watch.timeout_message("the deadline"), last))
                return
            await asyncio.sleep(deadline.sleep_before_poll(delay))

    async def on_kill(self) -> None:
        """Do nothing more when a user marks the waiting task failed or clears it (Airflow 3.3+).

        The cancel was sent before the task deferred; the wait only watches the object, so there is
        nothing left to stop on the OpenAI side.
        """
        target = RESOURCES[self.resource].describe(self.ids)
        self.log.info("Wait for %s stopped by a user; the cancel was already requested, nothing more to do.", target)
