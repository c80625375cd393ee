"""The set trigger's wire format, written and read here only: the IDs its kwargs store and the event it fires.

Both are kept in Airflow's metadata database (the kwargs in a TEXT column, 64 KiB on MySQL; the event
in the task instance's ``next_kwargs``), so each object costs its IDs once and a short result.

Format 2, written now: the kwargs hold the IDs as ``id_columns`` (:func:`id_columns`: one list per ID
field); the event is ``{"status": "set", "ids": {id field: [IDs, in order]}, "results": [one result
per wait, in order], "carry": ..., "try_number": ...}``, each result in the small form of
:func:`pack_result`.

Format 1, written by an earlier main: the kwargs hold ``id_sets`` (one dict of IDs per object), the
event whole events under ``events`` and no ``ids``. A format-2 event is told from a format-1 one by
its ``results``; both are read.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIEventError
from airflow_psopenai.resources import status_of
from airflow_psopenai.waiting.events import (
    EVENT_ERROR,
    EVENT_SETTLED,
    EVENT_STATUSES,
    EVENT_TIMEOUT,
    failure_event,
    settled_event,
)
from airflow_psopenai.waiting.polling import timeout_message

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from airflow_psopenai.resources import CancellableResource

SET_EVENT_FORMAT = 2
# The status of a set's event (the single wait's events have theirs in waiting.events).
SET_EVENT = "set"


def id_columns(resource: CancellableResource, id_sets: Sequence[Mapping[str, str]]) -> dict[str, list[str]]:
    """Return the IDs of a set as one list per ID field (each ID once, no key repeated per object)."""
    return {name: [ids[name] for ids in id_sets] for name in resource.id_fields}


def id_rows(columns: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Return the IDs of each object of a set from :func:`id_columns`' form."""
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise PSOpenAIConfigurationError(f"The ID lists of a set differ in length: {sorted(lengths)}.")
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def stored_id_sets(
    columns: Mapping[str, Sequence[str]] | None, id_sets: Sequence[Mapping[str, str]] | None
) -> list[dict[str, str]]:
    """Return the IDs of each object from the trigger's kwargs: format 2's ``id_columns`` or format 1's ``id_sets``.

    :raises PSOpenAIConfigurationError: Unless exactly one of them is given.
    """
    if (columns is None) == (id_sets is None):
        raise PSOpenAIConfigurationError("ResourceSetStatusTrigger needs exactly one of id_columns and id_sets.")
    return [dict(ids) for ids in id_sets] if id_sets is not None else id_rows(columns or {})


def pack_result(event: Mapping[str, Any], *, keep_object: bool) -> list[Any]:
    """Return the small stored form of one wait's event (see :func:`unpack_result`).

    ``[settled, status or whole object]``, ``[timeout, last status or object or None]`` or ``[error,
    message]``: the wait's IDs and its resource are the set's, and a timeout's message is rebuilt from them.

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
    """Return the event of one wait of a set from its stored form.

    The task checks it as a single wait's (:func:`~airflow_psopenai.waiting.events.check_event`).

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


def pack_set_event(
    resource: CancellableResource,
    id_sets: Sequence[Mapping[str, str]],
    events: Sequence[Mapping[str, Any]],
    *,
    keep_objects: bool,
    carry: Mapping[str, Any],
    try_number: int | None,
) -> dict[str, Any]:
    """Return the one event of a set's trigger, in format 2, from each wait's event (in the set's order).

    :param keep_objects: Keep each settled or last-seen object whole; else only its status.
    :param carry: The task's data, handed back as is.
    """
    return {
        "status": SET_EVENT,
        "ids": id_columns(resource, id_sets),
        "results": [pack_result(event, keep_object=keep_objects) for event in events],
        "carry": dict(carry),
        "try_number": try_number,
    }


def checked_set_event(event: object) -> dict[str, Any]:
    """Return ``event`` once it is a set's event with a carry (either format).

    :raises TypeError: For anything else.
    """
    if not isinstance(event, dict) or event.get("status") != SET_EVENT or not isinstance(event.get("carry"), dict):
        raise TypeError("not a set's event")
    return event


def waits_of(
    event: Mapping[str, Any], resource: CancellableResource, deadline_name: str
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Return the IDs of each waited object and each one's event, in order, from a set's event (either format).

    A format-1 event does not name the objects (its carry does): their IDs come back empty.

    :param deadline_name: How a timeout's message names the deadline.
    :raises TypeError: For an event of neither format (``KeyError``, ``ValueError`` for a broken one).
    """
    if set_event_format(event) == SET_EVENT_FORMAT:
        rows = id_rows(event["ids"])
        return rows, [
            unpack_result(result, resource, ids, deadline_name)
            for result, ids in zip(event["results"], rows, strict=True)
        ]
    if isinstance(event.get("events"), list):
        return [], list(event["events"])
    raise TypeError("neither results nor events")


def set_event_format(event: Mapping[str, Any]) -> int:
    """Return the format of a set's event: 2 when it holds ``results``, else 1."""
    return SET_EVENT_FORMAT if "results" in event else 1


# Airflow keeps trigger kwargs in the trigger table's ``kwargs`` column: TEXT, at most 65,535 bytes on MySQL.
MYSQL_TEXT_BYTES = 65_535
# Airflow 3.0 and 3.1 store a dict as {"__var": {...}, "__type": "dict"} (BaseSerialization).
_DICT_WRAPPER_BYTES = len(json.dumps({"__var": {}, "__type": "dict"})) - len("{}")


def stored_kwargs_size(kwargs: Mapping[str, Any]) -> int:
    """Return the bytes Airflow stores for these trigger kwargs on its largest form, on any 3.x line.

    That is the JSON of BaseSerialization's form (every dict wrapped), encrypted with the Fernet key
    (Airflow encrypts trigger kwargs when ``[core] fernet_key`` is set): a Fernet token holds a 57-byte
    frame and the text padded to 16 bytes, in URL-safe base64.
    """
    text = len(json.dumps(kwargs).encode()) + _DICT_WRAPPER_BYTES * _dicts_in(kwargs)
    return 4 * math.ceil((57 + 16 * (text // 16 + 1)) / 3)


def _dicts_in(value: object) -> int:
    if isinstance(value, dict):
        return 1 + sum(_dicts_in(item) for item in value.values())
    if isinstance(value, list | tuple):
        return sum(_dicts_in(item) for item in value)
    return 0
