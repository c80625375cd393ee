"""The wire format of a deferred set's carry, written and read here only: what StopBatchesOperator keeps of its
cancels for its resumption.

The carry goes into the set trigger's kwargs and comes back as it is in its event
(:mod:`airflow_psopenai.waiting.set_event`); a waited batch's ID and final object come back in the
event, so the carry holds neither.

Format 2, written now: ``{"limit": how messages name the deadline, "kinds": [[found, action], ...],
"waited": [index in kinds, one per waited batch, in the trigger's order], "others": [{"at": place in
the selection, BatchOutcome's fields but those that are None}, ...], "wait_started": epoch seconds}``.

Format 1, written by an earlier main: ``{"outcomes": [BatchOutcome's fields, one per batch, in
selection order], "limit": ...}``, told from format 2 by its ``outcomes``. Stored outcomes of
either format are read tolerantly (:func:`restore_outcome`).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import TYPE_CHECKING, Any

from airflow_psopenai.cancelling.bulk import BatchOutcome
from airflow_psopenai.exceptions import PSOpenAIEventError
from airflow_psopenai.resources import BATCH
from airflow_psopenai.waiting.polling import UNNAMED_DEADLINE
from airflow_psopenai.waiting.set_event import checked_set_event, waits_of

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

CARRY_FORMAT = 2


def waited_for(outcome: BatchOutcome) -> bool:
    """Return whether the set waits for this batch: its cancel did not fail and it has not settled yet."""
    return outcome.error is None and outcome.status not in BATCH.settled


def set_carry(
    outcomes: Sequence[BatchOutcome], deadline_name: str, *, keep_objects: bool, wait_started: float | None = None
) -> dict[str, Any]:
    """Return what the resumed task needs of the cancels' outcomes, each fact once.

    :param deadline_name: How messages name the wait's deadline.
    :param keep_objects: Keep the objects of the batches not waited for whole (for ``pass_through``);
        else only their status.
    :param wait_started: When the task deferred, in epoch seconds: the resumed task logs each batch's
        outcome with the seconds since.
    """
    kinds: dict[tuple[str | None, str], int] = {}
    waited: list[int] = []
    others: list[dict[str, Any]] = []
    for place, outcome in enumerate(outcomes):
        if waited_for(outcome):
            waited.append(kinds.setdefault((outcome.found, outcome.action), len(kinds)))
            continue
        obj = outcome.obj if keep_objects or outcome.obj is None else {"status": outcome.status}
        row = {"at": place, **asdict(outcome), "obj": obj}
        others.append({key: value for key, value in row.items() if value is not None})
    carry: dict[str, Any] = {
        "limit": deadline_name,
        "kinds": [list(kind) for kind in kinds],
        "waited": waited,
        "others": others,
    }
    return carry if wait_started is None else {**carry, "wait_started": wait_started}


def outcomes_after_a_set_wait(event: object) -> tuple[list[BatchOutcome], list[dict[str, Any]], str]:
    """Return the outcomes of the cancels, each waited batch's event (in order) and the wait's limit, from the
    event of a set's trigger.

    The event and its carry may each be in format 2 or 1, so that a set deferred before an upgrade
    resumes after it.

    :raises PSOpenAIEventError: For an event this task does not understand.
    """
    try:
        checked = checked_set_event(event)
        carry = checked["carry"]
        deadline_name = str(carry.get("limit", UNNAMED_DEADLINE))
        rows, events = waits_of(checked, BATCH, deadline_name)
        if carry_format(carry) == 1:
            return [restore_outcome(row) for row in carry["outcomes"]], events, deadline_name
        if not rows:
            raise ValueError("the waited batches are not named")
        return _outcomes_from_carry(carry, rows), events, deadline_name
    except (KeyError, IndexError, TypeError, ValueError, StopIteration) as error:
        if isinstance(error, PSOpenAIEventError):
            raise
        raise PSOpenAIEventError(
            f"The trigger sent an event this task does not understand ({error}): {event!r:.300}."
        ) from None


def carry_format(carry: Mapping[str, Any]) -> int:
    """Return the format of a set's carry: 1 when it holds the whole ``outcomes``, else 2."""
    return 1 if "outcomes" in carry else CARRY_FORMAT


def wait_started_of(event: object) -> float | None:
    """Return when the set's wait began, in epoch seconds, from its event; None when its carry does not say."""
    carry = event.get("carry") if isinstance(event, dict) else None
    started = carry.get("wait_started") if isinstance(carry, dict) else None
    return float(started) if isinstance(started, int | float) and not isinstance(started, bool) else None


def _outcomes_from_carry(carry: Mapping[str, Any], rows: Sequence[Mapping[str, str]]) -> list[BatchOutcome]:
    """Return every outcome in selection order: the others as stored, each waited one from its kind and its IDs."""
    if len(rows) != len(carry["waited"]):
        raise ValueError(f"{len(rows)} waited batches, {len(carry['waited'])} kinds")
    placed = {int(row["at"]): restore_outcome(row) for row in carry["others"]}
    waited = iter(zip(rows, carry["waited"], strict=True))
    outcomes: list[BatchOutcome] = []
    for place in range(len(placed) + len(rows)):
        if place not in placed:
            ids, kind = next(waited)
            found, action = carry["kinds"][kind]
            placed[place] = BatchOutcome(str(ids["batch_id"]), found, action)
        outcomes.append(placed[place])
    return outcomes


def restore_outcome(row: object) -> BatchOutcome:
    """Return a stored outcome, of either format or a later one: unknown fields are ignored, missing ones default.

    :raises TypeError: For a row without a batch ID.
    """
    if not isinstance(row, dict) or not isinstance(row.get("batch_id"), str):
        raise TypeError(f"a stored outcome without a batch_id: {row!r:.100}")
    known = {field.name for field in fields(BatchOutcome)}
    return BatchOutcome(**{key: value for key, value in row.items() if key in known})
