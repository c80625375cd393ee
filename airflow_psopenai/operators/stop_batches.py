"""StopBatchesOperator: cancel a whole set of batches in one task, wait for them with one deadline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowSkipException

from airflow_psopenai.cancelling.cancel import CancelPolicy
from airflow_psopenai.cancelling.concurrency import DEFAULT_MAX_CONCURRENCY, require_concurrency
from airflow_psopenai.cancelling.object_ids import ids_from_arguments, rendered_at_run_time
from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.client.rendered import parse_rendered_text
from airflow_psopenai.client.validation import as_epoch_seconds, require_id_of
from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIError, PSOpenAIEventError
from airflow_psopenai.operators.options import CancellingOperator
from airflow_psopenai.resources import BATCH, counted, status_of

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from airflow.providers.common.compat.sdk import Context

    from airflow_psopenai.cancelling.bulk import BatchOutcome
    from airflow_psopenai.triggers.status import ResourceSetStatusTrigger

SELECTORS = ("batch_ids", "batches", "metadata", "this_run")


class StopBatchesOperator(CancellingOperator):
    """Cancel a set of OpenAI Batches in one task; optionally wait for all of them, and pass them on.

    Give exactly one selector (each templated):

    :param batch_ids: A list of batch IDs (a list, an XComArg of one, or a template rendering a JSON list).
    :param batches: A list of batch objects, as returned by the API or another task.
    :param metadata: A dict: every batch whose metadata holds all these pairs, found by listing the
        account's batches, newest first, down to ``created_after``. When part of the list cannot be read
        (a page that keeps failing, a list that repeats itself), the batches it showed are cancelled and
        the task then fails, naming what was not looked at: its retry lists again. A DAG run's selector
        (``airflow_dag_id`` and ``airflow_run_id``) without ``airflow_deployment`` leaves out the batches
        another deployment tagged.
    :param this_run: True: the batches of this task's DAG run that this deployment launched (or that
        carry no deployment tag), listed as ``metadata`` is: the way to say "this run's batches".
    :param created_after: Where the listing of ``metadata`` stops: batches created before it (less the
        cutoff margin, ``[psopenai] cutoff_margin_sec``) are not looked at. A datetime (without a time
        zone: UTC), its ISO 8601 text or epoch seconds; default: the DAG run's ``run_after`` (when a
        manual run was created, the end of a scheduled run's data interval), which does not move
        when the run is cleared, so batches of earlier tries and of a cleared run are found.
    :param max_concurrency: GETs and cancels sent at once (default 20; the looks' list pages besides).

    Every other argument is described in :class:`~airflow_psopenai.operators.options.CancellingOperator`
    and applies to each batch: ``pass_through`` returns a list of the final objects, in selection order;
    ``wait_timeout`` is one deadline for the whole set, and ``deferrable`` defers one trigger for the set.
    Every batch is attempted; the task fails at the end, naming each batch that failed and why.
    An Airflow retry does not cancel a batch twice. A deferred set whose trigger kwargs would not fit
    the metadata database's TEXT column on MySQL (about a thousand batches) is refused before any cancel.
    """

    resource = BATCH
    template_fields = (*SELECTORS, "created_after", *CancellingOperator.template_fields)
    checked_options: ClassVar[Mapping[str, object]] = {
        **CancellingOperator.checked_options,
        "max_concurrency": DEFAULT_MAX_CONCURRENCY,
    }

    def __init__(
        self,
        *,
        batch_ids: list[str] | str | None = None,
        batches: list[dict[str, Any]] | str | None = None,
        metadata: dict[str, str] | str | None = None,
        this_run: bool | None = None,
        created_after: datetime | float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = [
            name
            for name, value in zip(SELECTORS, (batch_ids, batches, metadata, this_run or None), strict=True)
            if value is not None
        ]
        if len(given) != 1:
            raise PSOpenAIConfigurationError(
                f"StopBatchesOperator needs exactly one of {', '.join(SELECTORS)}; got "
                + (", ".join(given) if given else "none")
                + ". (To cancel nothing, pass batch_ids=[].)"
            )
        self.batch_ids = batch_ids
        self.batches = batches
        self.metadata = metadata
        self.this_run = bool(this_run)
        self.created_after = created_after
        self.max_concurrency = max_concurrency
        if not self._instance_of_a_mapped_task():
            self._check_options()
            self._check_written_selection()

    # -- execute ------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[dict[str, Any]] | None:
        """Select the batches, cancel each, wait for them if asked, and report."""
        from airflow_psopenai.cancelling.bulk import cancel_each
        from airflow_psopenai.cancelling.set_carry import set_carry, waited_for
        from airflow_psopenai.waiting.polling import wait_limit
        from airflow_psopenai.waiting.waits import run_in_worker

        self._check_options()
        batch_ids, not_looked_at = self._selected_ids(context)
        if not batch_ids and not not_looked_at:
            self.log.info("Nothing to cancel: the selection holds no batch.")
            return [] if self.pass_through else None
        if self.wait and self.deferrable:
            self._check_stored_size(self._set_trigger_before_the_cancels(batch_ids), len(batch_ids), sent=False)
        hook = self.hook
        policy = CancelPolicy.for_task(context, force=self.force, if_not_cancellable=self.if_not_cancellable)
        outcomes = run_in_worker(
            hook, lambda: cancel_each(hook, batch_ids, policy, max_concurrency=self.max_concurrency)
        )
        for outcome in outcomes:
            self.log.info("%s", outcome.line())
        if not_looked_at:
            # What the list showed is cancelled; the rest of it is for a retry, which lists again.
            raise PSOpenAIError(
                f"Sent the cancels of the {len(outcomes)} batches the list showed, but could not read all of it: "
                f"{not_looked_at} was not looked at. A retry lists again (and sends no second cancel)."
            )
        waiting = [o for o in outcomes if waited_for(o)] if self.wait else []
        if not waiting:
            return self._finish(outcomes)
        seconds, deadline_name = wait_limit(self.wait_timeout, hook.settings.timeout_sec, self.execution_timeout)
        deadline = Deadline.after(seconds)
        id_sets = [{"batch_id": o.batch_id} for o in waiting]
        if self.deferrable:
            from airflow_psopenai.triggers.status import ResourceSetStatusTrigger

            trigger = ResourceSetStatusTrigger(
                resource=BATCH.name,
                id_sets=id_sets,
                conn_id=self.conn_id,
                hook_kwargs=self.hook_kwargs(),
                poll_interval=self.poll_interval,
                deadline=deadline.at,
                try_number=context["ti"].try_number,
                keep_objects=self.pass_through,
                # Resumed in a fresh process: what the cancels found comes back in the event. Not in defer's
                # kwargs: dag.test() resumes with the event alone. The resumed task logs each batch's outcome
                # with the seconds since the deferral.
                carry=set_carry(outcomes, deadline_name, keep_objects=self.pass_through, wait_started=time.time()),
            )
            self._check_stored_size(trigger, len(outcomes), sent=True)
            self.defer(trigger=trigger, method_name="execute_complete")
        from airflow_psopenai.waiting.waits import wait_for_each

        events = run_in_worker(
            hook,
            lambda: wait_for_each(
                hook,
                BATCH,
                id_sets,
                poll_interval=self.poll_interval,
                deadline=deadline,
                deadline_name=deadline_name,
                log=self.log,
            ),
        )
        return self._after_wait(outcomes, events, deadline_name)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[dict[str, Any]] | None:
        """Resume after the deferred wait of the set: check the event, then report as ``execute`` does."""
        from airflow_psopenai.cancelling.set_carry import outcomes_after_a_set_wait, wait_started_of

        if self.event_of_an_earlier_try(event, context):
            return self.execute(context)
        outcomes, events, deadline_name = outcomes_after_a_set_wait(event)
        wait_started = wait_started_of(event)
        seconds = time.time() - wait_started if wait_started is not None else None
        return self._after_wait(outcomes, events, deadline_name, seconds_waited=seconds)

    # -- steps --------------------------------------------------------------------------------------------

    def _after_wait(
        self,
        outcomes: list[BatchOutcome],
        events: list[Any],
        deadline_name: str,
        *,
        seconds_waited: float | None = None,
    ) -> list[dict[str, Any]] | None:
        """Report each batch's wait.

        :param seconds_waited: After a deferred wait, the seconds since it began: each settled batch's outcome
            line (the last line of a wait in the worker) goes to the task's own log.
        """
        from airflow_psopenai.cancelling.set_carry import waited_for
        from airflow_psopenai.waiting.events import EVENT_SETTLED, check_event
        from airflow_psopenai.waiting.polling import log_status, outcome_of

        waited = [o for o in outcomes if waited_for(o)]
        if len(events) != len(waited):
            raise PSOpenAIEventError(f"The wait sent {len(events)} results for {len(waited)} batches.")
        for outcome, event in zip(waited, events, strict=True):
            checked = check_event(event, BATCH, {"batch_id": outcome.batch_id})
            if checked["status"] == EVENT_SETTLED:
                outcome.obj = checked["object"]
                if seconds_waited is not None:
                    log_status(
                        self.log,
                        BATCH.describe(checked["ids"]),
                        status_of(outcome.obj),
                        seconds_waited,
                        outcome_of(BATCH, outcome.obj),
                    )
            else:
                outcome.error = checked["message"]
                if checked.get("object") is not None:
                    outcome.obj = checked["object"]
            self.log.info("%s", outcome.line())
        return self._finish(outcomes, deadline_name=deadline_name)

    def _finish(self, outcomes: list[BatchOutcome], deadline_name: str | None = None) -> list[dict[str, Any]] | None:
        from airflow_psopenai.cancelling.bulk import NOTHING_TO_DO

        failed = [o for o in outcomes if o.error is not None]
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.action] = counts.get(outcome.action, 0) + 1
        self.log.info(
            "%s: %s; %d failed%s.",
            counted(len(outcomes), "batch"),
            ", ".join(f"{count} {action}" for action, count in counts.items()),
            len(failed),
            f" (wait bounded by {deadline_name})" if deadline_name else "",
        )
        if failed:
            raise PSOpenAIError(
                f"{len(failed)} of {counted(len(outcomes), 'batch')} failed: " + "; ".join(o.line() for o in failed)
            )
        # As StopBatchOperator: a batch whose cancel this task already made is no reason to skip.
        if self.if_not_cancellable == "skip" and all(o.action == NOTHING_TO_DO for o in outcomes):
            raise AirflowSkipException("No batch of the selection could be cancelled (if_not_cancellable='skip').")
        settled_other = [o.batch_id for o in outcomes if o.status in BATCH.settled and o.status != "cancelled"]
        if settled_other:
            self.log.warning(
                "%s had ended before the cancel took effect: %s", counted(len(settled_other), "batch"), settled_other
            )
        return [o.obj or {"id": o.batch_id} for o in outcomes] if self.pass_through else None

    def _check_stored_size(self, trigger: ResourceSetStatusTrigger, count: int, *, sent: bool) -> None:
        """Refuse to defer a set whose trigger kwargs would not fit the metadata database's TEXT column on MySQL.

        :param sent: Whether the cancels were sent already (else the check runs before any request).
        """
        from airflow_psopenai.waiting.set_event import MYSQL_TEXT_BYTES, stored_kwargs_size

        size = stored_kwargs_size(trigger.serialize()[1])
        if size > MYSQL_TEXT_BYTES:
            fits = max(1, count * MYSQL_TEXT_BYTES // size)
            raise PSOpenAIConfigurationError(
                f"A deferred set of {count} batches stores {size:,} bytes of trigger kwargs, over the "
                f"{MYSQL_TEXT_BYTES:,} bytes of MySQL's TEXT column that holds them in Airflow's metadata "
                f"database: split the selection into sets of at most about {fits} batches (mapped tasks, say), "
                "or wait in the worker (deferrable=False)."
                + (" The cancels were sent; a retry does not send them again." if sent else " Nothing was sent.")
            )

    def _set_trigger_before_the_cancels(self, batch_ids: list[str]) -> ResourceSetStatusTrigger:
        """Return the trigger of the set as if every batch were waited for (its largest stored form but for
        pass_through's objects of batches already settled, which the check at the deferral covers)."""
        from airflow_psopenai.cancelling.bulk import CANCEL_SENT, BatchOutcome
        from airflow_psopenai.cancelling.set_carry import set_carry
        from airflow_psopenai.triggers.status import ResourceSetStatusTrigger

        return ResourceSetStatusTrigger(
            resource=BATCH.name,
            id_sets=[{"batch_id": batch_id} for batch_id in batch_ids],
            conn_id=self.conn_id,
            hook_kwargs=self.hook_kwargs(),
            poll_interval=self.poll_interval,
            deadline=0.0,
            try_number=0,
            keep_objects=self.pass_through,
            carry=set_carry(
                [BatchOutcome(batch_id, "in_progress", CANCEL_SENT) for batch_id in batch_ids],
                "its execution_timeout of 86400 s",
                keep_objects=self.pass_through,
            ),
        )

    @classmethod
    def check_option_values(cls, values: Mapping[str, object]) -> None:
        """Refuse bad options of the cancels, their wait and the connection (``checked_options``, by name)."""
        super().check_option_values(values)
        require_concurrency(values["max_concurrency"])

    def _selected_ids(self, context: Context) -> tuple[list[str], str]:
        """Return the selected batch IDs in selection order, each once, and the part of the list not looked at
        ('' when the list was read whole, or for IDs and objects); bad input raises before any request."""
        not_looked_at = ""
        if self.batch_ids is not None:
            ids = _ids_of_batch_ids(self.batch_ids)
        elif self.batches is not None:
            ids = _ids_of_batches(self.batches)
        else:
            from airflow_psopenai.cancelling.bulk import list_by_metadata
            from airflow_psopenai.run_tags import run_selector

            ti = context["ti"]
            metadata = run_selector(ti.dag_id, ti.run_id) if self.this_run else _as_metadata(self.metadata)

            listed = list_by_metadata(self.hook, metadata, self._created_after(context), self.log)
            ids = [str(batch["id"]) for batch in listed.found]
            not_looked_at = listed.what_was_not_read(BATCH.label)
        return list(dict.fromkeys(ids)), not_looked_at

    def _check_written_selection(self) -> None:
        """Refuse at DAG-parse time a selection written wrong; a template's or an XComArg's is checked at run time."""
        if self.batch_ids is not None and not rendered_at_run_time(self.batch_ids):
            _ids_of_batch_ids(self.batch_ids)
        if self.batches is not None and not rendered_at_run_time(self.batches):
            _ids_of_batches(self.batches)
        if self.metadata is not None and not rendered_at_run_time(self.metadata):
            _as_metadata(self.metadata)
        if self.created_after is not None and not rendered_at_run_time(self.created_after):
            _as_epoch_seconds(self.created_after)

    def _created_after(self, context: Context) -> float | None:
        value = self.created_after
        if value is None:
            dag_run = context.get("dag_run")
            value = getattr(dag_run, "run_after", None)
            if value is None:
                return None
        return _as_epoch_seconds(value)


def _as_epoch_seconds(value: object) -> float:
    """Return ``created_after`` (a datetime, its ISO 8601 text or epoch seconds; no time zone: UTC) in epoch seconds."""
    return as_epoch_seconds(value, "created_after")


def _ids_of_batch_ids(value: object) -> list[str]:
    return [
        require_id_of(BATCH, "batch_id", item, f"batch_ids[{n}]") for n, item in enumerate(_as_list("batch_ids", value))
    ]


def _ids_of_batches(value: object) -> list[str]:
    return [ids_from_arguments(BATCH, {"batch_id": None}, obj)["batch_id"] for obj in _as_list("batches", value)]


def _as_list(argument: str, value: object) -> list[Any]:
    """Return a selector's list: a list or tuple, or the text a template rendered it to (JSON or Python's)."""
    if isinstance(value, str):
        text = value.strip()
        if text in ("None", ""):
            raise PSOpenAIConfigurationError(
                f"{argument} rendered to {value!r}: the template or XCom it comes from returned nothing. "
                f"Check the upstream task (for nothing to cancel, return an empty list)."
            )
        value = parse_rendered_text(text)
        if value is None:
            raise PSOpenAIConfigurationError(
                f"{argument} must be a list; the text {text[:100]!r} is no list. With a template, use "
                "render_template_as_native_obj=True or '{{ ... | tojson }}'."
            )
    if value is None:
        raise PSOpenAIConfigurationError(f"{argument} is None: give a list (an empty one cancels nothing).")
    if not isinstance(value, list | tuple):
        raise PSOpenAIConfigurationError(f"{argument} must be a list, got {type(value).__name__} {value!r:.100}.")
    return list(value)


def _as_metadata(value: object) -> dict[str, str]:
    if isinstance(value, str):
        value = parse_rendered_text(value.strip()) or value
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(key, str) and isinstance(item, str) for key, item in value.items())
    ):
        raise PSOpenAIConfigurationError(
            f"metadata must be a non-empty dict of text keys and values, got {value!r:.100}."
        )
    return value
