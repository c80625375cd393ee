"""The single wait's wire format, written and read here only: the event a trigger sends back to the task it
resumes (settled, timeout or error), and how the task checks it.

Format 2, written now: ``{"status": "settled", "resource": ..., "ids": ..., "object": ..., "after": seconds
since the wait began}`` or ``{"status": "timeout" | "error", "message": ..., "object": last seen or None}``;
the trigger adds ``try_number``. Format 1, written by an earlier main, has no ``after``: it is read
with the wait's length unknown (:func:`settled_after`). The set trigger's event is in
:mod:`airflow_psopenai.waiting.set_event`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_psopenai.exceptions import PSOpenAIEventError
from airflow_psopenai.resources import RESOURCES, CancellableResource, status_of

if TYPE_CHECKING:
    from collections.abc import Mapping

EVENT_FORMAT = 2
EVENT_SETTLED = "settled"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
EVENT_STATUSES = (EVENT_SETTLED, EVENT_TIMEOUT, EVENT_ERROR)


SLIM_KEYS = ("id", "object", "status")


def slim_object(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return only an object's ``id``, ``object`` and ``status``: enough to check an event, small to store."""
    return None if obj is None else {key: obj[key] for key in SLIM_KEYS if key in obj}


def settled_event(
    resource: CancellableResource, ids: Mapping[str, str], obj: Mapping[str, Any], after: float | None = None
) -> dict[str, Any]:
    """Return the event that ends a wait on a settled object; ``after``: the seconds since the wait began."""
    event = {"status": EVENT_SETTLED, "resource": resource.name, "ids": dict(ids), "object": dict(obj)}
    return event if after is None else {**event, "after": round(after, 3)}


def settled_after(event: Mapping[str, Any]) -> float | None:
    """Return how long a checked settled event's wait took, in seconds (None in format 1)."""
    after = event.get("after")
    return float(after) if isinstance(after, int | float) and not isinstance(after, bool) else None


def failure_event(kind: str, message: str, obj: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the event that ends a wait on a timeout or a permanent error."""
    return {"status": kind, "message": message, "object": dict(obj) if obj is not None else None}


def check_event(event: object, resource: CancellableResource, ids: Mapping[str, str]) -> dict[str, Any]:
    """Return a trigger event after checking it is one of ours, about this object; else raise ``PSOpenAIEventError``.

    A missing or unknown event is never taken as success.
    """
    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise PSOpenAIEventError(f"The trigger sent an event this task does not understand: {event!r:.300}.")
    if event["status"] != EVENT_SETTLED:
        if not isinstance(event.get("message"), str):
            raise PSOpenAIEventError(f"The trigger sent a {event['status']} event without a message: {event!r:.300}.")
        return event
    obj = event.get("object")
    if (
        RESOURCES.get(str(event.get("resource"))) is not resource
        or event.get("ids") != dict(ids)
        or not isinstance(obj, dict)
        or status_of(obj) not in resource.settled
    ):
        raise PSOpenAIEventError(
            f"The trigger sent a settled event without a settled {resource.describe(ids)}: {event!r:.300}."
        )
    return event
