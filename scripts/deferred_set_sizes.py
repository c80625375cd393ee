"""Print what a deferred StopBatchesOperator set stores in Airflow's metadata database, per batch, on this Airflow line.

Run with the venv of the line to measure (``python -m scripts.deferred_set_sizes``). The trigger's kwargs
are measured as Airflow stores them (its own ``Trigger.encrypt_kwargs``, with a Fernet key, as in
production), the event as the task instance's ``next_kwargs`` holds it.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from typing import Any

from airflow_psopenai.cancelling.bulk import CANCEL_SENT, BatchOutcome
from airflow_psopenai.cancelling.set_carry import set_carry
from airflow_psopenai.resources import BATCH
from airflow_psopenai.triggers.status import ResourceSetStatusTrigger
from airflow_psopenai.waiting.events import failure_event, settled_event
from airflow_psopenai.waiting.set_event import MYSQL_TEXT_BYTES, pack_set_event, stored_kwargs_size

SIZES = (1, 100, 1000)
# A Fernet key made for this measurement only (production encrypts trigger kwargs with its own).
MEASURING_FERNET_KEY = "Jx6bTP2-mbhc1ZAnPZ-uwaFtKEGqy3pyyp_2ZYHhZh8="
LIMIT = "its wait_timeout of 600 s"


def batch_ids(count: int) -> list[str]:
    """Return ``count`` IDs shaped as OpenAI's (``batch_`` and 32 hex digits)."""
    return [f"batch_{secrets.token_hex(16)}" for _ in range(count)]


def set_trigger(ids: list[str], *, pass_through: bool = False) -> ResourceSetStatusTrigger:
    """Return the trigger StopBatchesOperator defers with when every batch was cancelled and is waited for."""
    outcomes = [BatchOutcome(batch_id, "in_progress", CANCEL_SENT, {"status": "cancelling"}) for batch_id in ids]
    return ResourceSetStatusTrigger(
        resource=BATCH.name,
        id_sets=[{"batch_id": batch_id} for batch_id in ids],
        conn_id="psopenai_default",
        hook_kwargs={"timeout_sec": 30.0},
        poll_interval=5.0,
        deadline=time.time() + 600,
        try_number=1,
        keep_objects=pass_through,
        carry=set_carry(outcomes, LIMIT, keep_objects=pass_through),
    )


def set_event(trigger: ResourceSetStatusTrigger, *, timeout: bool = False) -> dict[str, Any]:
    """Return the event the trigger fires when each batch settled (or each timed out, ``cancelling``)."""
    events = []
    for ids in trigger.id_sets:
        obj = {"id": ids["batch_id"], "object": "batch", "status": "cancelling" if timeout else "cancelled"}
        events.append(failure_event("timeout", "-", obj) if timeout else settled_event(BATCH, ids, obj))
    return pack_set_event(
        BATCH,
        trigger.id_sets,
        events,
        keep_objects=trigger.keep_objects,
        carry=trigger.carry,
        try_number=trigger.try_number,
    )


def stored_kwargs(kwargs: dict[str, Any]) -> int:
    """Return the bytes of the trigger table's ``kwargs`` column for these kwargs, as this Airflow line writes it."""
    from airflow.models.trigger import Trigger

    return len(Trigger.encrypt_kwargs(kwargs))


def stored_event(event: dict[str, Any]) -> int:
    """Return the bytes of the task instance's ``next_kwargs`` once the event is in, as this line writes it."""
    try:
        from airflow.sdk.serde import serialize
    except ImportError:  # Airflow 3.0 and 3.1
        from airflow.serialization.serialized_objects import BaseSerialization

        serialize = BaseSerialization.serialize
    return len(json.dumps(serialize({"event": event})))


def measure(count: int) -> dict[str, int]:
    """Return the sizes for a set of ``count`` batches: kwargs (plain, stored, our bound) and events."""
    trigger = set_trigger(batch_ids(count))
    _, kwargs = trigger.serialize()
    return {
        "batches": count,
        "kwargs_json": len(json.dumps(kwargs)),
        "kwargs_stored": stored_kwargs(kwargs),
        "kwargs_bound": stored_kwargs_size(kwargs),
        "event_settled": stored_event(set_event(trigger)),
        "event_timeout": stored_event(set_event(trigger, timeout=True)),
    }


def largest_set() -> int:
    """Return the largest set whose stored kwargs fit MySQL's TEXT column, by this provider's bound."""
    low, high = 1, 10_000
    while low < high:
        middle = (low + high + 1) // 2
        _, kwargs = set_trigger(batch_ids(middle)).serialize()
        if stored_kwargs_size(kwargs) <= MYSQL_TEXT_BYTES:
            low = middle
        else:
            high = middle - 1
    return low


def main() -> None:
    """Print the table."""
    os.environ.setdefault("AIRFLOW__CORE__FERNET_KEY", MEASURING_FERNET_KEY)
    from airflow import __version__

    print(f"Airflow {__version__}; bytes, and bytes per batch at N = {SIZES[-1]}")
    rows = [measure(count) for count in SIZES]
    for key in rows[0]:
        per_batch = (rows[-1][key] - rows[0][key]) / (SIZES[-1] - SIZES[0]) if key != "batches" else ""
        print(
            f"{key:>14}: " + "  ".join(f"{row[key]:>8}" for row in rows) + (f"  ({per_batch:.1f})" if per_batch else "")
        )
    print(f"largest set that fits MySQL's TEXT column ({MYSQL_TEXT_BYTES:,} bytes): {largest_set()} batches")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
