"""A safety net for the failure paths no task handles: cancel every batch the failing DAG run launched.

``on_failure_callback=cancel_run_batches`` on a DAG (or a task) cancels every batch tagged with the
run's ``airflow_dag_id`` and ``airflow_run_id`` (see :mod:`airflow_psopenai.run_tags`), with the
default connection; ``cancel_run_batches_with(conn_id=...)`` chooses another. The same listing and
cancels as ``StopBatchesOperator(metadata=...)``, without a wait. It never raises into Airflow (it
logs and goes on), is bounded in time, and is idempotent: a batch already cancelling is left alone.

Where it runs: a DAG's ``on_failure_callback`` runs in the DAG processor (a run failed by a task,
by ``dagrun_timeout``), a task's in the worker that ran the task. Both reach the connection the way
tasks do. Light to import: DAG files import it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_psopenai.bases.resource_task import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_psopenai.client.deadline import Deadline

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SEC = 120.0
DEFAULT_MAX_CONCURRENCY = 20


def cancel_run_batches_with(
    conn_id: str = DEFAULT_CONN_ID,
    *,
    timeout_sec: float = DEFAULT_TIMEOUT_SEC,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> Callable[[Mapping[str, Any]], None]:
    """Return a failure callback like :func:`cancel_run_batches` for connection ``conn_id``.

    :param timeout_sec: Longest time the callback takes, listing and cancels included: one budget, of
        which each list page, retry and cancel gets only what is left; a cancel whose turn comes after
        it is reported as not attempted.
    :param max_concurrency: Cancels sent at once, 1 to 200.
    :raises PSOpenAIConfigurationError: For a ``timeout_sec`` or ``max_concurrency`` out of range (NaN, infinite).
    """
    from airflow_psopenai.client.validation import require_positive_seconds
    from airflow_psopenai.exceptions import PSOpenAIConfigurationError

    require_positive_seconds(timeout_sec, "timeout_sec")
    if not (isinstance(max_concurrency, int) and not isinstance(max_concurrency, bool) and 1 <= max_concurrency <= 200):
        raise PSOpenAIConfigurationError(f"max_concurrency must be 1 to 200, got {max_concurrency!r}.")

    def callback(context: Mapping[str, Any]) -> None:
        from airflow_psopenai.client.deadline import Deadline

        cancel_batches_of_run(context["dag_run"], conn_id, Deadline.budget(timeout_sec), max_concurrency)

    return callback


def cancel_run_batches(context: Mapping[str, Any]) -> None:
    """Cancel every batch tagged with the failing DAG run (default connection); log, never raise."""
    cancel_run_batches_with()(context)


def cancel_batches_of_run(dag_run: Any, conn_id: str, deadline: Deadline, max_concurrency: int) -> None:
    """Cancel the running batches tagged with ``dag_run`` (its ``dag_id``, ``run_id``, ``run_after``), all of
    it within ``deadline`` (a budget); log, never raise."""
    from airflow_psopenai.exceptions import PSOpenAIError

    try:
        _cancel_run_batches(dag_run, conn_id, deadline, max_concurrency)
    except PSOpenAIError as error:  # says what went wrong by itself: one line, no traceback
        log.error("cancel_run_batches could not cancel the run's batches (connection %r): %s", conn_id, error)
    except Exception:  # a callback must never fail the run's bookkeeping
        log.exception("cancel_run_batches could not cancel the run's batches (connection %r).", conn_id)


def _cancel_run_batches(dag_run: Any, conn_id: str, deadline: Deadline, max_concurrency: int) -> None:
    import asyncio

    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.resources import BATCH, has_status, status_of
    from airflow_psopenai.run_tags import run_selector
    from airflow_psopenai.tasks.bulk import batches_by_metadata, cancel_each
    from airflow_psopenai.tasks.cancel import CancelPolicy

    selector = run_selector(str(dag_run.dag_id), str(dag_run.run_id))
    left = deadline.poll_limit()
    hook = PSOpenAIHook(conn_id, timeout_sec=max(left, 0.001) if left is not None else None)
    run_after = getattr(dag_run, "run_after", None)
    created_after = run_after.timestamp() if run_after is not None else None
    batches = batches_by_metadata(hook, selector, created_after, log, deadline=deadline)
    # A listed status that is no status at all is looked at (each look falls back to its own GET).
    pending = [str(b["id"]) for b in batches if status_of(b) in BATCH.cancellable or not has_status(b)]
    if not pending:
        log.info("cancel_run_batches: no running batch of run %r of %r.", selector["airflow_run_id"], dag_run.dag_id)
        return
    policy = CancelPolicy(if_not_cancellable="succeed")

    async def cancel() -> list[Any]:
        from airflow_psopenai.client.pool import aclose_shared_clients

        try:
            return await cancel_each(hook, pending, policy, max_concurrency=max_concurrency, deadline=deadline)
        finally:
            await aclose_shared_clients()

    outcomes = asyncio.run(cancel())
    for outcome in outcomes:
        log.info("cancel_run_batches: %s", outcome.line())
    failed = sum(1 for outcome in outcomes if outcome.error is not None)
    log.info("cancel_run_batches: %d batches of the run, %d could not be cancelled.", len(outcomes), failed)
