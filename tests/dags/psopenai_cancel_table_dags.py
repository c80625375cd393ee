"""The cancel table's DAG: every case through StopBatchOperator and through StopBatchesOperator, in one run.

A case is a batch status x ``force`` x ``if_not_cancellable`` x first try / retry / cancel time in this
run. Each option set and try has one StopBatchOperator mapped over its cases (one batch each) and one
StopBatchesOperator given all of them. Every case's batch has a fixed ID (:func:`case_batch_id`) that
the test creates in the emulator before the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_psopenai.operators import StopBatchesOperator, StopBatchOperator
from airflow_psopenai.resources import BATCH

START = datetime(2026, 1, 1)
SINGLE, SET = "single", "set"


@dataclass(frozen=True)
class Case:
    """One row of the table.

    :param cancelled_in_this_run: The batch's cancel time is after the DAG run started (else an hour before it).
    """

    status: str
    force: bool
    if_not_cancellable: str
    tries: str  # "first" or "retry"
    cancelled_in_this_run: bool = False

    def task_id(self, operator: str) -> str:
        """Return the ID of the task that runs this case through ``operator`` (SINGLE or SET)."""
        return f"{operator}_{'force' if self.force else 'look'}_{self.if_not_cancellable}_{self.tries}"

    def batch_id(self, operator: str) -> str:
        """Return the ID of this case's batch for ``operator``."""
        return f"batch_{self.task_id(operator)}_{self.status}{'_in_run' if self.cancelled_in_this_run else ''}"


OPTION_SETS = [
    (force, if_not_cancellable, tries)
    for force in (False, True)
    for if_not_cancellable in ("fail", "succeed", "skip")
    for tries in ("first", "retry")
]
CASES = [
    Case(status, force, if_not_cancellable, tries, in_run)
    for force, if_not_cancellable, tries in OPTION_SETS
    for status in sorted(BATCH.statuses)
    for in_run in ((False, True) if tries == "first" and status in BATCH.cancel_requested else (False,))
]


# A set whose batches were all cancelled by its own earlier try: nothing was cancellable, nothing is skipped.
OWN_CANCELS_TASK = "set_look_skip_retry_own_cancels"
OWN_CANCELS = [f"batch_{OWN_CANCELS_TASK}_{status}" for status in sorted(BATCH.cancel_requested)]


class FailsItsFirstTry:
    """Fails its first try before any request, so that its retry (try 2) is the try that cancels."""

    def execute(self, context: Any) -> Any:
        if context["ti"].try_number <= 1:
            raise RuntimeError("The first try fails before its cancel: the retry cancels.")
        return super().execute(context)  # type: ignore[misc]


class RetriedStopBatchOperator(FailsItsFirstTry, StopBatchOperator):
    """StopBatchOperator whose cancel is made by a retry."""


class RetriedStopBatchesOperator(FailsItsFirstTry, StopBatchesOperator):
    """StopBatchesOperator whose cancels are made by a retry."""


with DAG("cancel_table", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
    for force, if_not_cancellable, tries in OPTION_SETS:
        retried = tries == "retry"
        options: dict[str, Any] = {"force": force, "if_not_cancellable": if_not_cancellable}
        if retried:
            options.update(retries=1, retry_delay=timedelta(0))
        group = [
            case
            for case in CASES
            if (case.force, case.if_not_cancellable, case.tries) == (force, if_not_cancellable, tries)
        ]
        single = RetriedStopBatchOperator if retried else StopBatchOperator
        bulk = RetriedStopBatchesOperator if retried else StopBatchesOperator
        single.partial(task_id=group[0].task_id(SINGLE), **options).expand(
            batch_id=[case.batch_id(SINGLE) for case in group]
        )
        bulk(task_id=group[0].task_id(SET), batch_ids=[case.batch_id(SET) for case in group], **options)
    RetriedStopBatchesOperator(
        task_id=OWN_CANCELS_TASK,
        batch_ids=OWN_CANCELS,
        if_not_cancellable="skip",
        retries=1,
        retry_delay=timedelta(0),
    )
