"""StopBatchesOperator: cancel a whole set of batches in one task, wait for them with one deadline."""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSkipException, BaseOperator, conf

from airflow_psopenai.cancelling.cancel import CancelPolicy, IfNotCancellable, check_cancel_options
from airflow_psopenai.cancelling.object_ids import ids_from_arguments, rendered_at_run_time
from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.client.validation import (
    DEFAULT_MAX_CONCURRENCY,
    parse_rendered_text,
    require_concurrency,
    require_epoch_seconds,
    require_id_of,
)
from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIError, PSOpenAIEventError
from airflow_psopenai.resource_task import CONNECTION_TEMPLATE_FIELDS, DEFAULT_CONN_ID, ResourceTaskMixin
from airflow_psopenai.resources import BATCH, counted, status_of
from airflow_psopenai.waiting.events import EVENT_SETTLED, check_event
from airflow_psopenai.waiting.polling import log_status, wait_limit

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import Context

    from airflow_psopenai.cancelling.bulk import BatchOutcome
    from airflow_psopenai.triggers.status import ResourceSetStatusTrigger

SELECTORS = ("batch_ids", "batches", "metadata")


class StopBatchesOperator(ResourceTaskMixin, BaseOperator):
    """Cancel a set of OpenAI Batches in one task; optionally wait for all of them, and pass them on.

    Give exactly one selector (each templated):

    :param batch_ids: A list of batch IDs (a list, an XComArg of one, or a template rendering a JSON list).
    :param batches: A list of batch objects, as returned by the API or another task.
    :param metadata: A dict: every batch whose metadata holds all these pairs, found by listing the
        account's batches, newest first, down to ``created_after``.
    :param created_after: Where the listing of ``metadata`` stops: batches created before it are
        not looked at. A datetime or epoch seconds; default: the DAG run's ``run_after`` (when a
        manual run was created, the end of a scheduled run's data interval), which does not move
        when the run is cleared, so batches of earlier tries and of a cleared run are found.
    :param max_concurrency: GETs and cancels sent at once (default 20; the looks' list pages besides).

    ``wait``, ``force``, ``pass_through`` (a list of the final objects, in selection order),
    ``if_not_cancellable``, ``poll_interval``, ``wait_timeout`` (one deadline for the whole set),
    ``deferrable`` (one trigger for the set), ``timeout_sec``, ``max_retry_count`` and the connection
    arguments mean what they mean for :class:`~airflow_psopenai.operators.StopBatchOperator`, for each
    batch. Every batch is attempted; the task fails at the end, naming each batch that failed and why.
    An Airflow retry does not cancel a batch twice. A deferred set whose trigger kwargs would not fit
    the metadata database's TEXT column on MySQL (about a thousand batches) is refused before any cancel.
    """

    resource = BATCH
    template_fields = (*SELECTORS, "created_after", *CONNECTION_TEMPLATE_FIELDS)
    ui_color = "#f6c6b7"

    def __init__(
        self,
        *,
        batch_ids: list[str] | str | None = None,
        batches: list[dict[str, Any]] | str | None = None,
        metadata: dict[str, str] | str | None = None,
        created_after: datetime | float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        wait: bool = False,
        force: bool = False,
        pass_through: bool = False,
        if_not_cancellable: IfNotCancellable = "fail",
        poll_interval: float = 1.0,
        wait_timeout: float | timedelta | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        conn_id: str = DEFAULT_CONN_ID,
        api_base: str | None = None,
        organization: str | None = None,
        timeout_sec: float | None = None,
        max_retry_count: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = [
            name for name, value in zip(SELECTORS, (batch_ids, batches, metadata), strict=True) if value is not None
        ]
        if len(given) != 1:
            raise PSOpenAIConfigurationError(
                f"StopBatchesOperator needs exactly one of {', '.join(SELECTORS)}; got "
                + (", ".join(given) if given else "none")
                + ". (To cancel nothing, pass batch_ids=[].)"
            )
        self._store_connection_args(conn_id, api_base, organization, timeout_sec, max_retry_count)
        self.batch_ids = batch_ids
        self.batches = batches
        self.metadata = metadata
        self.created_after = created_after
        self.max_concurrency = max_concurrency
        self.wait = wait
        self.force = force
        self.pass_through = pass_through
        self.if_not_cancellable = if_not_cancellable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self.deferrable = deferrable
        if not self._instance_of_a_mapped_task():
            self._check_options()
            self._check_written_selection()

    # -- execute ------------------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[dict[str, Any]] | None:
        """Select the batches, cancel each, wait for them if asked, and report."""
        from airflow_psopenai.cancelling.bulk import cancel_each
        from airflow_psopenai.waiting.waits import run_in_worker

        self._check_options()
        batch_ids = self._selected_ids(context)
        if not batch_ids:
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
        waiting = [o for o in outcomes if _waited(o)] if self.wait else []
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
                carry={
                    **set_carry(outcomes, deadline_name, keep_objects=self.pass_through),
                    "wait_started": time.time(),
                },
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
        if self.event_of_an_earlier_try(event, context):
            return self.execute(context)
        outcomes, events, deadline_name = outcomes_after_a_set_wait(event)
        carry = event.get("carry") if isinstance(event, dict) else None
        wait_started = carry.get("wait_started") if isinstance(carry, dict) else None
        seconds = time.time() - wait_started if isinstance(wait_started, int | float) else None
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
        waited = [o for o in outcomes if _waited(o)]
        if len(events) != len(waited):
            raise PSOpenAIEventError(f"The wait sent {len(events)} results for {len(waited)} batches.")
        for outcome, event in zip(waited, events, strict=True):
            checked = check_event(event, BATCH, {"batch_id": outcome.batch_id})
            if checked["status"] == EVENT_SETTLED:
                outcome.obj = checked["object"]
                if seconds_waited is not None:
                    log_status(self.log, BATCH.describe(checked["ids"]), status_of(outcome.obj), seconds_waited)
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
        from airflow_psopenai.triggers.status import MYSQL_TEXT_BYTES, stored_kwargs_size

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

    def _check_options(self) -> None:
        check_cancel_options(self.if_not_cancellable, self.poll_interval, self.wait_timeout)
        require_concurrency(self.max_concurrency)
        self.hook_kwargs()

    def _selected_ids(self, context: Context) -> list[str]:
        """Return the selected batch IDs in selection order, each once; bad input raises before any request."""
        if self.batch_ids is not None:
            ids = _ids_of_batch_ids(self.batch_ids)
        elif self.batches is not None:
            ids = _ids_of_batches(self.batches)
        else:
            metadata = _as_metadata(self.metadata)
            from airflow_psopenai.cancelling.bulk import batches_by_metadata

            created_after = self._created_after(context)
            ids = [str(batch["id"]) for batch in batches_by_metadata(self.hook, metadata, created_after, self.log)]
        return list(dict.fromkeys(ids))

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
    """Return ``created_after`` (a datetime, its ISO 8601 text or epoch seconds) in epoch seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return require_epoch_seconds(value, "created_after")
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            pass
    raise PSOpenAIConfigurationError(
        f"created_after must be a datetime, an ISO 8601 text or epoch seconds, got {value!r}."
    )


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


def _waited(outcome: BatchOutcome) -> bool:
    """Return whether the set waits for this batch: its cancel did not fail and it has not settled yet."""
    return outcome.error is None and outcome.status not in BATCH.settled


# -- what a deferred set keeps for its resumption ------------------------------------------------------------
# The event of the set's trigger returns the set's carry as it is: {"limit": how messages name the deadline,
# "kinds": [[found, action], ...], "waited": [index in kinds, one per waited batch, in the trigger's order],
# "others": [{"at": place in the selection, BatchOutcome's fields but those that are None}, ...]}.
# A waited batch's ID and final object come back in the event, so the carry holds neither.


def set_carry(outcomes: Sequence[BatchOutcome], deadline_name: str, *, keep_objects: bool) -> dict[str, Any]:
    """Return what the resumed task needs of the cancels' outcomes, each fact once.

    :param keep_objects: Keep the objects of the batches not waited for whole (for ``pass_through``);
        else only their status.
    """
    kinds: dict[tuple[str | None, str], int] = {}
    waited: list[int] = []
    others: list[dict[str, Any]] = []
    for place, outcome in enumerate(outcomes):
        if _waited(outcome):
            waited.append(kinds.setdefault((outcome.found, outcome.action), len(kinds)))
            continue
        obj = outcome.obj if keep_objects or outcome.obj is None else {"status": outcome.status}
        row = {"at": place, **asdict(outcome), "obj": obj}
        others.append({key: value for key, value in row.items() if value is not None})
    return {"limit": deadline_name, "kinds": [list(kind) for kind in kinds], "waited": waited, "others": others}


def outcomes_after_a_set_wait(event: object) -> tuple[list[BatchOutcome], list[dict[str, Any]], str]:
    """Return the outcomes of the cancels, each waited batch's event (in order) and the wait's limit, from the
    event of a set's trigger.

    Both the event and the carry it returns may be in this release's form or in that of release 0.1.0
    (whole events; whole outcomes in the carry), so that a set deferred before an upgrade resumes after it.

    :raises PSOpenAIEventError: For an event this task does not understand.
    """
    from airflow_psopenai.triggers.status import id_rows
    from airflow_psopenai.waiting.events import unpack_result
    from airflow_psopenai.waiting.waits import SET_EVENT

    try:
        if not isinstance(event, dict) or event.get("status") != SET_EVENT or not isinstance(event["carry"], dict):
            raise TypeError("not a set's event")
        carry = event["carry"]
        deadline_name = str(carry.get("limit", "the deadline"))
        if "results" in event:
            rows = id_rows(event["ids"])
            events = [
                unpack_result(result, BATCH, ids, deadline_name)
                for result, ids in zip(event["results"], rows, strict=True)
            ]
        elif isinstance(event["events"], list):  # fired by release 0.1.0
            rows, events = [], event["events"]
        else:
            raise TypeError("neither results nor events")
        if "outcomes" in carry:  # deferred by release 0.1.0
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


def _outcomes_from_carry(carry: Mapping[str, Any], rows: Sequence[Mapping[str, str]]) -> list[BatchOutcome]:
    """Return every outcome in selection order: the others as stored, each waited one from its kind and its IDs."""
    from airflow_psopenai.cancelling.bulk import BatchOutcome

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
    """Return a stored outcome, from this release or another: unknown fields are ignored, missing ones default.

    :raises TypeError: For a row without a batch ID.
    """
    from airflow_psopenai.cancelling.bulk import BatchOutcome

    if not isinstance(row, dict) or not isinstance(row.get("batch_id"), str):
        raise TypeError(f"a stored outcome without a batch_id: {row!r:.100}")
    known = {field.name for field in fields(BatchOutcome)}
    return BatchOutcome(**{key: value for key, value in row.items() if key in known})
