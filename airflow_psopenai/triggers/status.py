"""One async trigger, generic over the resource table, that waits until an object is settled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import RESOURCES
from airflow_psopenai.waiting.polling import UNNAMED_DEADLINE
from airflow_psopenai.waiting.set_event import id_columns, pack_set_event, stored_id_sets
from airflow_psopenai.waiting.waits import wait_for_each, wait_until_settled

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence


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
    :param try_number: The try of the task that deferred, echoed in the event: Airflow 3.0 resumes a
        retried deferred task with the event of its earlier try, which the task can then tell apart.
    :param wait_started: When the task deferred, in epoch seconds: the settled event says the seconds
        since (``after``), which the resumed task logs; None counts from the trigger's start.
    :param deadline_name: How the timeout's message names the deadline, as the task's wait in the worker
        does ("its wait_timeout of 60 s"); kwargs stored without it say "the deadline".
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
        try_number: int | None = None,
        wait_started: float | None = None,
        deadline_name: str = UNNAMED_DEADLINE,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is untyped
        if resource not in RESOURCES:
            raise PSOpenAIConfigurationError(f"Unknown resource {resource!r}; known: {', '.join(RESOURCES)}.")
        self.resource = resource
        self.ids = dict(ids)
        self.conn_id = conn_id
        self.hook_kwargs = dict(hook_kwargs or {})
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.try_number = try_number
        self.wait_started = wait_started
        self.deadline_name = deadline_name

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
                "try_number": self.try_number,
                "wait_started": self.wait_started,
                "deadline_name": self.deadline_name,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll, awaiting every call, and yield exactly one event."""
        event = await wait_until_settled(
            PSOpenAIHook(self.conn_id, **self.hook_kwargs),
            RESOURCES[self.resource],
            self.ids,
            poll_interval=self.poll_interval,
            deadline=Deadline(self.deadline),
            deadline_name=self.deadline_name,
            log=self.log,
            started_at=self.wait_started,
        )
        yield TriggerEvent({**event, "try_number": self.try_number})

    async def on_kill(self) -> None:
        """Do nothing more when Airflow 3.3+ stops the wait: the task marked failed or cleared, or the trigger
        moved to another triggerer (apache/airflow#73454).

        The cancel was sent before the task deferred; the wait only watches the object, so there is
        nothing left to stop on the OpenAI side.
        """
        target = RESOURCES[self.resource].describe(self.ids)
        self.log.info(
            "Wait for %s stopped here (task marked failed or cleared, or the wait moved to another triggerer); "
            "the cancel was already requested, nothing more to do.",
            target,
        )


class ResourceSetStatusTrigger(BaseTrigger):
    """Wait for a whole set of objects in one trigger, with one deadline: one wait per object, polled together.

    Batch waits of the set (and of every other trigger of the event loop) share the status board,
    so a thousand batches cost about ten list requests a round. Fires one event once every wait
    has ended. Its kwargs and its event are in the wire format of
    :mod:`airflow_psopenai.waiting.set_event`, which also reads those stored in format 1.

    :param resource: Name of an entry of :data:`airflow_psopenai.resources.RESOURCES`.
    :param id_columns: The objects' IDs, one list per ID field (``{"batch_id": [...]}``), in order.
    :param id_sets: The IDs of each object, as a list of dicts (format 1's kwargs, and the task's
        way to give them; give ``id_columns`` or ``id_sets``).
    :param keep_objects: Keep each settled object whole in the event; else only its status.
    :param carry: JSON-plain data of the task, handed back as is in the event's ``carry``.

    The other arguments are those of :class:`ResourceStatusTrigger`.
    """

    def __init__(
        self,
        *,
        resource: str,
        conn_id: str,
        id_columns: Mapping[str, Sequence[str]] | None = None,
        id_sets: Sequence[Mapping[str, str]] | None = None,
        hook_kwargs: Mapping[str, Any] | None = None,
        poll_interval: float = 1.0,
        deadline: float | None = None,
        try_number: int | None = None,
        keep_objects: bool = False,
        carry: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # BaseTrigger.__init__ is untyped
        if resource not in RESOURCES:
            raise PSOpenAIConfigurationError(f"Unknown resource {resource!r}; known: {', '.join(RESOURCES)}.")
        self.resource = resource
        self.id_sets = stored_id_sets(id_columns, id_sets)
        self.conn_id = conn_id
        self.hook_kwargs = dict(hook_kwargs or {})
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.try_number = try_number
        self.keep_objects = keep_objects
        self.carry = dict(carry or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and JSON-plain keyword arguments: each ID once, with no key per object."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "resource": self.resource,
                "id_columns": id_columns(RESOURCES[self.resource], self.id_sets),
                "conn_id": self.conn_id,
                "hook_kwargs": self.hook_kwargs,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "try_number": self.try_number,
                "keep_objects": self.keep_objects,
                "carry": self.carry,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for every object at once and yield exactly one event."""
        resource = RESOURCES[self.resource]
        events = await wait_for_each(
            PSOpenAIHook(self.conn_id, **self.hook_kwargs),
            resource,
            self.id_sets,
            poll_interval=self.poll_interval,
            deadline=Deadline(self.deadline),
            log=self.log,
        )
        yield TriggerEvent(
            pack_set_event(
                resource,
                self.id_sets,
                events,
                keep_objects=self.keep_objects,
                carry=self.carry,
                try_number=self.try_number,
            )
        )
