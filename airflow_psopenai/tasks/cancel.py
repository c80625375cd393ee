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
``if_not_cancellable``. This module imports nothing of Airflow: operators import it at DAG-parse time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from airflow_psopenai.client.validation import as_seconds, require_positive_seconds
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.resources import status_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow_psopenai.resources import CancellableResource

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


__all__ = ["ALREADY_REQUESTED_TEXT", "CancelPolicy", "IfNotCancellable", "Step", "check_cancel_options"]
