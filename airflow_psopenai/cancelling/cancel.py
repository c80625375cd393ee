"""Whether to send a cancel, for one object: the rules the single and the bulk operators share.

PSOpenAI's rule: without ``force``, the object is looked at first and a cancel is sent only in a
cancellable status. On top of it, a cancel is idempotent: an object found ``cancelling`` or
``cancelled`` is taken as a cancel this task already made, and no second one is sent, when

* this is an Airflow retry (try number above 1), or
* the API's time of the cancel (``cancelling_at``, ``cancelled_at``) is after the DAG run started:
  Airflow can run a try again under the same try number (apache/airflow#67287: a resumed deferred
  task failed by the scheduler and retried with the number of the try before), so the try number
  alone does not tell. The API's times are whole seconds: a cancel within the run's first second
  is not told apart from one just before it, and keeps the first-try rule; and a thread run has no
  time of its ``cancelling``, only of its ``cancelled``.

Everything else found already cancelled (another run's, a user's before this run) follows
``if_not_cancellable``.

:func:`cancel_one` applies these rules to one object and does its requests; every caller (the single
operators, :class:`~airflow_psopenai.operators.StopBatchesOperator`, the failure callback and the
listener through them) only turns its :class:`CancelResult` into a log line, a skip or an error. This
module imports nothing of Airflow: operators import it at DAG-parse time.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_psopenai.client.deadline import NO_DEADLINE
from airflow_psopenai.client.validation import as_seconds, require_positive_seconds
from airflow_psopenai.exceptions import (
    PSOpenAICannotCancelError,
    PSOpenAIConfigurationError,
    PSOpenAIError,
    PSOpenAITransportError,
)
from airflow_psopenai.resources import status_of

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable, Mapping

    from airflow_psopenai.client.deadline import Deadline
    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.resources import CancellableResource

    Look = Callable[[], Awaitable[dict[str, Any]]]

IfNotCancellable = Literal["fail", "succeed", "skip"]
IF_NOT_CANCELLABLE_CHOICES = ("fail", "succeed", "skip")
# How a log line says that no second cancel is sent.
ALREADY_REQUESTED_TEXT = "its cancel was requested by an earlier try or since this DAG run started"


def check_cancel_options(if_not_cancellable: object, poll_interval: object, wait_timeout: object) -> None:
    """Refuse bad options of a cancel and its wait before the cancel is sent, not after."""
    if if_not_cancellable not in IF_NOT_CANCELLABLE_CHOICES:
        raise PSOpenAIConfigurationError(
            f"if_not_cancellable must be one of {', '.join(IF_NOT_CANCELLABLE_CHOICES)}, got {if_not_cancellable!r}."
        )
    require_positive_seconds(poll_interval, "poll_interval")
    as_seconds(wait_timeout, "wait_timeout")  # type: ignore[arg-type]  # anything a template rendered


class Step(enum.Enum):
    """What to do with an object after looking at it."""

    SEND = "send the cancel"
    ALREADY_REQUESTED = "take its cancel as this task's own"
    NOT_CANCELLABLE = "follow if_not_cancellable"


@dataclass(frozen=True)
class CancelPolicy:
    """How one task treats each object it cancels.

    :param force: Send the cancel whatever the status (PSOpenAI's ``-Force``); no look first on a first try,
        so a forced try run again sends its cancel again (a no-op for a batch; a run's refusal is
        then looked into).
    :param if_not_cancellable: What an object in a status that cannot be cancelled means.
    :param first_try: False on an Airflow retry.
    :param run_started_at: When the DAG run started, in epoch seconds (None: unknown).
    """

    force: bool = False
    if_not_cancellable: IfNotCancellable = "fail"
    first_try: bool = True
    run_started_at: float | None = None

    @classmethod
    def for_task(cls, context: Mapping[str, Any], *, force: bool, if_not_cancellable: IfNotCancellable) -> CancelPolicy:
        """Return the policy of a running task: its try number and its DAG run's start from the context."""
        started = getattr(context.get("dag_run"), "start_date", None)
        return cls(
            force=force,
            if_not_cancellable=if_not_cancellable,
            first_try=context["ti"].try_number <= 1,
            run_started_at=started.timestamp() if started is not None else None,
        )

    @property
    def looks_first(self) -> bool:
        """Return whether the object is retrieved before the cancel (all but a forced first try)."""
        return not self.force or not self.first_try

    def step(self, resource: CancellableResource, current: Mapping[str, Any]) -> Step:
        """Decide from the object as it is now."""
        status = status_of(current)
        if status in resource.cancel_requested and (
            not self.first_try or self._requested_in_this_run(resource, current)
        ):
            return Step.ALREADY_REQUESTED
        if not self.force and status not in resource.cancellable:
            return Step.NOT_CANCELLABLE
        return Step.SEND

    def _requested_in_this_run(self, resource: CancellableResource, current: Mapping[str, Any]) -> bool:
        if self.run_started_at is None:
            return False
        times = [current.get(name) for name in resource.cancel_requested_at]
        return any(
            isinstance(at, int | float) and not isinstance(at, bool) and at > self.run_started_at for at in times
        )


class Action(enum.Enum):
    """What the cancel of one object did; the value is how a log line says it."""

    SENT = "cancel requested"
    ALREADY_REQUESTED = f"no second cancel ({ALREADY_REQUESTED_TEXT})"
    NOT_CANCELLABLE = "nothing to cancel"
    NOT_ATTEMPTED = "not attempted (the time budget was spent before its turn)"
    FAILED = "failed"


@dataclass(frozen=True)
class CancelResult:
    """The outcome of :func:`cancel_one`.

    :param action: What was done.
    :param message: The one sentence that tells the outcome (for a failure, the error's text).
    :param found: The status the object was found in (None when it was not looked at, or the look failed).
    :param obj: The object as last seen: the cancel's answer, or the latest look (None when none succeeded).
    :param error: Why it failed (only for :attr:`Action.FAILED`): the error to raise.
    :param answer_lost: For a failure: the cancel was sent and its answer did not arrive (a timeout, a
        dropped connection), so it may have gone through.
    """

    action: Action
    message: str
    found: str | None = None
    obj: dict[str, Any] | None = None
    error: PSOpenAIError | None = None
    answer_lost: bool = False

    @property
    def status(self) -> str | None:
        """Return the object's latest known status."""
        return None if self.obj is None else status_of(self.obj)


async def cancel_one(
    hook: PSOpenAIHook,
    resource: CancellableResource,
    ids: Mapping[str, str],
    policy: CancelPolicy,
    *,
    deadline: Deadline = NO_DEADLINE,
    look: Look | None = None,
    slots: asyncio.Semaphore | None = None,
) -> CancelResult:
    """Cancel one object by ``policy``: look unless forced on a first try, decide, send, read a refusal.

    A refusal that names a cancelled (or cancelling) status is looked into: a cancel this task already
    made (``policy``) is its own, not a failure. Any other refusal, and an object found in a status that
    cannot be cancelled, follow ``if_not_cancellable``; any error of a request gives :attr:`Action.FAILED`.
    Never raises :class:`~airflow_psopenai.exceptions.PSOpenAIError`.

    :param deadline: Bounds every request and its retries; a request is not started once it has passed.
    :param look: How the first look retrieves the object (default: a GET), e.g. through the status board.
    :param slots: Held around the cancel and the look after a refusal (not the first look), to bound
        how many requests a set sends at once.
    """
    target = resource.describe(ids)
    found: str | None = None
    current: dict[str, Any] | None = None

    async def get() -> dict[str, Any]:
        async with slots or contextlib.nullcontext():
            _check_time_left(deadline, "look at", target)
            return await hook.aget_object(resource, ids, deadline=deadline)

    cancel_sent = False
    try:
        if policy.looks_first:
            current = await (look() if look is not None else get())
            found = status_of(current)
            step = policy.step(resource, current)
            if step is Step.ALREADY_REQUESTED:
                return _already_requested(target, found, current)
            if step is Step.NOT_CANCELLABLE:
                reason = PSOpenAICannotCancelError(
                    f'Cannot cancel {resource.label} with status "{found}": {target}.', status=found, ids=ids
                )
                return _not_cancellable(policy, reason, found, current, found_by_look=True)
        try:
            async with slots or contextlib.nullcontext():
                _check_time_left(deadline, "cancel", target)
                cancel_sent = True
                sent = await hook.acancel_object(resource, ids, deadline=deadline)
        except PSOpenAICannotCancelError as refusal:
            # A forced cancel has not looked (or the object changed since): the refusal may be of this task's
            # own earlier cancel. Looked again only then, or when the object is handed on (succeed, skip).
            maybe_own = refusal.status in resource.cancel_requested
            if maybe_own or policy.if_not_cancellable != "fail":
                current = await get()
                found = found or status_of(current)
                if maybe_own and policy.step(resource, current) is Step.ALREADY_REQUESTED:
                    return _already_requested(target, status_of(current), current)
            return _not_cancellable(policy, refusal, found, current, found_by_look=False)
    except PSOpenAIError as error:
        if not cancel_sent and deadline.passed():
            return CancelResult(Action.NOT_ATTEMPTED, f"its cancel was not sent: {error}", found, current, error)
        lost = cancel_sent and isinstance(error, PSOpenAITransportError) and error.lost_answer
        return CancelResult(Action.FAILED, str(error), found, current, error, answer_lost=lost)
    now = status_of(sent)
    ran = resource.what_ran(sent) if now in resource.settled else ""
    message = f"Cancel requested for {target}: status is now {now}." + (f" What ran: {ran}." if ran else "")
    return CancelResult(Action.SENT, message, found, sent)


def _check_time_left(deadline: Deadline, what: str, target: str) -> None:
    if deadline.passed():
        raise PSOpenAIError(f"No time was left to {what} {target}: its deadline had passed.")


def _already_requested(target: str, status: str | None, current: dict[str, Any]) -> CancelResult:
    message = f"{target} is already {status}: {ALREADY_REQUESTED_TEXT}; no second cancel."
    return CancelResult(Action.ALREADY_REQUESTED, message, status, current)


def _not_cancellable(
    policy: CancelPolicy,
    reason: PSOpenAICannotCancelError,
    found: str | None,
    current: dict[str, Any] | None,
    *,
    found_by_look: bool,
) -> CancelResult:
    """Follow ``if_not_cancellable``: the API's own refusal fails as it is; a status found by the look, with advice."""
    if policy.if_not_cancellable == "succeed":
        message = f"{reason} Nothing to cancel (if_not_cancellable='succeed')."
        return CancelResult(Action.NOT_CANCELLABLE, message, found, current)
    if policy.if_not_cancellable == "skip":
        return CancelResult(Action.NOT_CANCELLABLE, f"{reason} Skipping (if_not_cancellable='skip').", found, current)
    error = reason
    if found_by_look:
        error = PSOpenAICannotCancelError(
            f"{reason} Use force=True to send the cancel anyway, or if_not_cancellable='succeed' for cleanup tasks.",
            status=reason.status,
            ids=reason.ids,
        )
    return CancelResult(Action.FAILED, str(error), found, current, error)


__all__ = [
    "ALREADY_REQUESTED_TEXT",
    "Action",
    "CancelPolicy",
    "CancelResult",
    "IfNotCancellable",
    "Step",
    "cancel_one",
    "check_cancel_options",
]
