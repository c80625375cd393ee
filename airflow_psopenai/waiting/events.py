"""What a trigger sends back to the task it resumes: settled, timeout or error, and how the task checks it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_psopenai.exceptions import PSOpenAIEventError
from airflow_psopenai.resources import RESOURCES, CancellableResource, status_of
from airflow_psopenai.waiting.polling import timeout_message

if TYPE_CHECKING:
    from collections.abc import Mapping

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
    """Return how long a checked settled event's wait took, in seconds (None from a trigger of an older release)."""
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


# A set's event stores one small result per wait, in the order of the set (the metadata database keeps it):
# [settled, status or whole object], [timeout, last status or object or None], [error, message].
# The wait's IDs and its resource are the set's; a timeout's message is rebuilt from them.


def pack_result(event: Mapping[str, Any], *, keep_object: bool) -> list[Any]:
    """Return the small stored form of one wait's event (see :func:`unpack_result`).

    :param keep_object: Keep a settled or last-seen object whole; else only its status.
    """
    if event["status"] == EVENT_ERROR:
        return [EVENT_ERROR, event["message"]]
    obj = event.get("object")
    seen = obj if keep_object or not isinstance(obj, dict) else status_of(obj)
    return [event["status"], seen]


def unpack_result(
    packed: object, resource: CancellableResource, ids: Mapping[str, str], deadline_name: str
) -> dict[str, Any]:
    """Return the event of one wait of a set from its stored form, for :func:`check_event`.

    :param deadline_name: How a timeout's message names the deadline.
    :raises PSOpenAIEventError: For a form this task does not understand.
    """
    if not (isinstance(packed, list) and len(packed) == 2 and packed[0] in EVENT_STATUSES):
        raise PSOpenAIEventError(f"The trigger sent a result this task does not understand: {packed!r:.300}.")
    kind, seen = packed
    if kind == EVENT_ERROR:
        return failure_event(EVENT_ERROR, str(seen))
    obj = seen if isinstance(seen, dict) or seen is None else {"id": ids[resource.id_fields[-1]], "status": seen}
    if kind == EVENT_SETTLED:
        return settled_event(resource, ids, obj or {})
    last_status = status_of(obj) if obj is not None else None
    return failure_event(EVENT_TIMEOUT, timeout_message(resource.describe(ids), deadline_name, last_status), obj)
