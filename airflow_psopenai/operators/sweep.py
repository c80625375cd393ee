"""StopOrphanedBatchesOperator: a maintenance DAG's sweep of the batches whose DAG run ended without them."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_psopenai.cancelling.concurrency import DEFAULT_MAX_CONCURRENCY, require_concurrency
from airflow_psopenai.cancelling.sweep import DEFAULT_RUN_STATES, require_run_states
from airflow_psopenai.client.validation import require_positive_seconds
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.resource_task import CONNECTION_TEMPLATE_FIELDS, DEFAULT_CONN_ID, ResourceTaskMixin
from airflow_psopenai.resources import BATCH

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_psopenai.cancelling.sweep import RunKey
    from airflow_psopenai.client.deadline import Deadline

DEFAULT_LOOKBACK = timedelta(hours=48)
DEFAULT_SWEEP_TIMEOUT = timedelta(minutes=10)


class StopOrphanedBatchesOperator(ResourceTaskMixin, BaseOperator):
    """Cancel this deployment's running batches whose DAG run ended (failed, by default): the sweep that no
    lost callback escapes, for a maintenance DAG.

    Reads the account's batches newest first down to ``lookback`` ago (less the cutoff margin) through the
    listing walk, keeps those still running that carry this deployment's ``airflow_deployment`` and a DAG
    run's ``airflow_dag_id`` and ``airflow_run_id``, asks Airflow once per DAG run for its state, and cancels
    the batches of the runs whose state is in ``run_states``. Never a batch of a queued or running run, of
    another deployment, without a deployment tag or without run tags.

    :param run_states: The run states whose batches are cancelled: ``"failed"`` (default), ``"success"``
        (for DAGs that must leave nothing running), ``"missing"`` (a run Airflow answers it does not know).
        A state lookup that fails otherwise keeps the run's batches (counted as ``state unknown``).
    :param lookback: How far back the list is read (a timedelta; default 48 hours).
    :param sweep_timeout: The whole sweep's budget, listing, state lookups and cancels (a timedelta; default
        10 minutes); what it could not reach is kept and logged.
    :param dry_run: True sends no cancel and returns what it would cancel (``would_cancel``).
    :param conn_id: Connection of type ``psopenai`` (or the official ``openai`` type).
    :param timeout_sec: Per-request limit in seconds; 0 means no overall limit.
    :param max_retry_count: Retries of a failed call (0 to 100).
    :param max_concurrency: Cancels sent at once, 1 to 200 (default 20).
    :return: ``{"cancelled": [ids], "would_cancel": [ids], "failed": [ids], "kept": {reason: count}}``.
    """

    resource = BATCH
    template_fields: Sequence[str] = CONNECTION_TEMPLATE_FIELDS
    ui_color = "#f6c6b7"

    def __init__(
        self,
        *,
        run_states: Sequence[str] = DEFAULT_RUN_STATES,
        lookback: timedelta = DEFAULT_LOOKBACK,
        sweep_timeout: timedelta = DEFAULT_SWEEP_TIMEOUT,
        dry_run: bool = False,
        conn_id: str = DEFAULT_CONN_ID,
        timeout_sec: float | None = None,
        max_retry_count: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._store_connection_args(conn_id, None, None, timeout_sec, max_retry_count)
        self.run_states = run_states
        self.lookback = lookback
        self.sweep_timeout = sweep_timeout
        # BaseOperator.dry_run is a method: the option is kept under another name.
        self.report_only = dry_run
        self.max_concurrency = max_concurrency
        self._check_options()
        self.hook_kwargs()

    def _check_options(self) -> None:
        self.run_states = require_run_states(self.run_states)
        require_concurrency(self.max_concurrency)
        for name in ("lookback", "sweep_timeout"):
            value = getattr(self, name)
            if not isinstance(value, timedelta):
                raise PSOpenAIConfigurationError(
                    f"{name} must be a timedelta, got {type(value).__name__} {value!r:.100}."
                )
            require_positive_seconds(value.total_seconds(), name)

    def execute(self, context: Context) -> dict[str, Any]:
        """List, look up each run's state, cancel (unless ``dry_run``), report."""
        from airflow_psopenai.cancelling.bulk import (
            ANSWER_LOST,
            CANCEL_SENT,
            LISTING_SHARE,
            cancel_each,
            list_by_metadata,
        )
        from airflow_psopenai.cancelling.cancel import CancelPolicy
        from airflow_psopenai.cancelling.sweep import (
            STATE_UNKNOWN,
            batches_to_cancel,
            count,
            runs_of_running_batches,
        )
        from airflow_psopenai.client.deadline import Deadline
        from airflow_psopenai.run_tags import deployment
        from airflow_psopenai.waiting.waits import run_in_worker

        ours = deployment()
        deadline = Deadline.budget(self.sweep_timeout.total_seconds())
        hook = self.hook
        since = time.time() - self.lookback.total_seconds()
        listed = list_by_metadata(hook, {}, since, self.log, deadline=deadline.part(LISTING_SHARE))
        kept: dict[str, int] = {}
        runs = runs_of_running_batches(listed.found, ours, kept)
        states = self._run_states(context, runs, deadline)
        chosen = batches_to_cancel(runs, states, self.run_states, kept)
        result: dict[str, Any] = {"cancelled": [], "would_cancel": [], "failed": [], "kept": kept}
        if self.report_only:
            result["would_cancel"] = chosen
        elif chosen:
            policy = CancelPolicy(force=True, if_not_cancellable="succeed")
            outcomes = run_in_worker(
                hook,
                lambda: cancel_each(hook, chosen, policy, max_concurrency=self.max_concurrency, deadline=deadline),
            )
            for outcome in outcomes:
                self.log.info("Sweep (deployment %r): %s", ours, outcome.line())
                if outcome.action in (CANCEL_SENT, ANSWER_LOST):
                    result["cancelled"].append(outcome.batch_id)
                elif outcome.error is not None:
                    result["failed"].append(outcome.batch_id)
                else:
                    count(kept, outcome.action)
        not_read = listed.what_was_not_read(BATCH.label)
        hours = self.lookback.total_seconds() / 3600
        summary = (
            f"Sweep (deployment {ours!r}): {listed.scanned} batches in the last {hours:g} h, "
            f"{sum(len(ids) for ids in runs.values())} running of {len(runs)} DAG runs of this deployment; "
            + (f"would cancel {len(chosen)}" if self.report_only else f"cancelled {len(result['cancelled'])}")
            + f" (runs {', '.join(self.run_states)}), {len(result['failed'])} failed; kept: "
            + (", ".join(f"{n} {why}" for why, n in sorted(kept.items())) or "none")
            + "."
            + (f" Not looked at: {not_read}." if not_read else "")
        )
        if not_read or result["failed"] or kept.get(STATE_UNKNOWN):
            self.log.warning(summary)
        else:
            self.log.info(summary)
        return result

    def _run_states(self, context: Context, runs: Iterable[RunKey], deadline: Deadline) -> dict[RunKey, str | None]:
        """Ask Airflow for each run's state once, through the Task SDK; None where the lookup failed or the
        budget was spent before it."""
        from airflow_psopenai.compat import dag_run_state

        ti = context["ti"]
        states: dict[RunKey, str | None] = {}
        for dag_id, run_id in runs:
            if deadline.spent():
                states[(dag_id, run_id)] = None
                continue
            try:
                states[(dag_id, run_id)] = dag_run_state(ti, dag_id, run_id)
            except Exception as error:  # the run's batches are kept; the others are still looked at
                self.log.warning("Could not get the state of DAG run %r of %r: %s", run_id, dag_id, error)
                states[(dag_id, run_id)] = None
        return states
