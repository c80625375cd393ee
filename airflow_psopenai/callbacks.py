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

    :param timeout_sec: Longest time the callback takes, listing and cancels included.
    :param max_concurrency: Cancels sent at once.
    """

    def callback(context: Mapping[str, Any]) -> None:
        try:
            _cancel_run_batches(context, conn_id, timeout_sec, max_concurrency)
        except Exception:  # a callback must never fail the run's bookkeeping
            log.exception("cancel_run_batches could not cancel the run's batches (connection %r).", conn_id)

    return callback


def cancel_run_batches(context: Mapping[str, Any]) -> None:
    """Cancel every batch tagged with the failing DAG run (default connection); log, never raise."""
    cancel_run_batches_with()(context)


def _cancel_run_batches(context: Mapping[str, Any], conn_id: str, timeout_sec: float, max_concurrency: int) -> None:
    import asyncio

    from airflow_psopenai.client.deadline import Deadline
    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.resources import BATCH, status_of
    from airflow_psopenai.run_tags import run_selector
    from airflow_psopenai.tasks.bulk import batches_by_metadata, cancel_each
    from airflow_psopenai.tasks.cancel import CancelPolicy

    dag_run = context["dag_run"]
    selector = run_selector(str(dag_run.dag_id), str(dag_run.run_id))
    hook = PSOpenAIHook(conn_id, timeout_sec=timeout_sec)
    run_after = getattr(dag_run, "run_after", None)
    created_after = run_after.timestamp() if run_after is not None else None
    batches = batches_by_metadata(hook, selector, created_after, log)
    pending = [str(b["id"]) for b in batches if status_of(b) in BATCH.cancellable]
    if not pending:
        log.info("cancel_run_batches: no running batch of run %r of %r.", selector["airflow_run_id"], dag_run.dag_id)
        return
    deadline = Deadline.after(timeout_sec)
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
