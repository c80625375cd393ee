"""Callbacks that cancel every batch a DAG run launched: when the run fails, and when it is late.

``on_failure_callback=cancel_run_batches`` on a DAG (or a task) cancels every batch tagged with the
run's ``airflow_dag_id`` and ``airflow_run_id`` (see :mod:`airflow_psopenai.run_tags`), with the
default connection; ``cancel_run_batches_with(conn_id=...)`` chooses another. The same listing and
cancels as ``StopBatchesOperator(metadata=...)``, without a wait. It never raises into Airflow (it
logs and goes on), is bounded in time as a whole, and is idempotent: a batch already cancelling is
left alone, and two cleanups of one run at once in one process send one cancel per batch. A list it
cannot read whole still gets the batches it found cancelled, and the summary says what it did not
look at.

A run that is late (Deadline Alerts, Airflow 3.1+):
``DAG(deadline=DeadlineAlert(..., callback=AsyncCallback(acancel_run_batches, kwargs={"conn_id": ...})))``
cancels the same set from the triggerer; on 3.2+ ``SyncCallback(cancel_run_batches, kwargs=...)``
does it from the executor. Both take the deadline's context, whose ``dag_run`` is the REST API's DAG
run as a dict, as well as a task's.

``cancel_run_work`` and ``acancel_run_work`` do the same for the run's batches and its fine-tuning jobs
(created with ``PSOpenAIHook.create_fine_tuning_job``, or tagged with ``run_tags``), both under one
budget, with the same guarantees; the job list is filtered by the run's tags on the server.

Where they run: a DAG's ``on_failure_callback`` runs in the DAG processor (a run failed by a task,
by ``dagrun_timeout``), a task's in the worker that ran the task, an ``AsyncCallback`` in the
triggerer, a ``SyncCallback`` in the executor's workers. Each reaches the connection the way the
code around it does. Light to import: DAG files import it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_psopenai.cancelling.concurrency import DEFAULT_MAX_CONCURRENCY, require_concurrency
from airflow_psopenai.client.validation import require_conn_id, require_positive_seconds
from airflow_psopenai.resource_task import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from typing import TypeAlias

    from airflow_psopenai.client.deadline import Deadline
    from airflow_psopenai.hooks import PSOpenAIHook

    # A callback's work: list the run's objects and cancel the running ones within the deadline; the summary.
    _Cleanup: TypeAlias = Callable[[PSOpenAIHook, Mapping[str, Any], Deadline, int, str], Awaitable[str]]

__all__ = [
    "acancel_run_batches",
    "acancel_run_work",
    "cancel_run_batches",
    "cancel_run_batches_with",
    "cancel_run_work",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SEC = 120.0
LAST_RESORT_GRACE_SEC = 0.5


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
    :raises PSOpenAIConfigurationError: For a ``conn_id`` that is no connection's name, a ``timeout_sec`` or
        ``max_concurrency`` out of range (NaN, infinite).
    """
    _check_options(conn_id, timeout_sec, max_concurrency)

    def callback(context: Mapping[str, Any]) -> None:
        cancel_run_batches(context, conn_id=conn_id, timeout_sec=timeout_sec, max_concurrency=max_concurrency)

    return callback


def cancel_run_batches(
    context: Mapping[str, Any],
    *,
    conn_id: str = DEFAULT_CONN_ID,
    timeout_sec: float = DEFAULT_TIMEOUT_SEC,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> None:
    """Cancel every running batch tagged with the context's DAG run; log, never raise.

    A failure callback (``on_failure_callback=cancel_run_batches``) or, on Airflow 3.2+, a deadline's
    ``SyncCallback(cancel_run_batches, kwargs={"conn_id": ..., "timeout_sec": ...})``.

    :param context: A task's or a DAG's callback context, or a deadline's (``dag_run`` a dict).
    :param conn_id: The connection.
    :param timeout_sec: Longest time the callback takes, listing and cancels included. The connection
        is read first, synchronously as tasks read it, and its time counts against the budget; a
        secrets backend that hangs holds the callback up as it would hold up a task.
    :param max_concurrency: Cancels sent at once, 1 to 200.
    """
    _run_sync(
        _cancel_run_batches,
        "cancel_run_batches",
        context,
        conn_id=conn_id,
        timeout_sec=timeout_sec,
        max_concurrency=max_concurrency,
    )


def cancel_batches_of_run(
    context: Mapping[str, Any], conn_id: str, deadline: Deadline, max_concurrency: int, name: str = "cancel_run_batches"
) -> None:
    """Cancel the running batches tagged with the context's DAG run, all of it within ``deadline`` (a budget,
    which its owner may end early); log, never raise. Runs its own event loop."""
    _run_in_own_loop(
        _cancel_run_batches, name, context, conn_id=conn_id, deadline=deadline, max_concurrency=max_concurrency
    )


async def acancel_run_batches(
    context: Mapping[str, Any],
    *,
    conn_id: str = DEFAULT_CONN_ID,
    timeout_sec: float = DEFAULT_TIMEOUT_SEC,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> str | None:
    """Cancel every running batch tagged with the context's DAG run, without blocking the event loop.

    A deadline's callback (Airflow 3.1+), awaited in the triggerer as
    ``AsyncCallback(acancel_run_batches, kwargs={"conn_id": ..., "timeout_sec": ...})``; or awaited
    with a task's context. Sends the cancels and does not wait for them to settle. Never raises
    (a cancelled await still stops it); logs one line per batch and a summary.

    :param context: A deadline's context (``dag_run`` the REST API's DAG run as a dict) or a task's.
    :param conn_id: The connection.
    :param timeout_sec: Longest time the callback takes, connection lookup, listing and cancels included.
    :param max_concurrency: Cancels sent at once, 1 to 200.
    :return: The summary line, or None when it could not be done. Text: Airflow stores it in its
        callback table's text column, which a dict would not fit (the triggerer would stop on it).
    """
    return await _run_async(
        _cancel_run_batches,
        "acancel_run_batches",
        context,
        conn_id=conn_id,
        timeout_sec=timeout_sec,
        max_concurrency=max_concurrency,
    )


def cancel_run_work(
    context: Mapping[str, Any],
    *,
    conn_id: str = DEFAULT_CONN_ID,
    timeout_sec: float = DEFAULT_TIMEOUT_SEC,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> None:
    """Cancel every running batch and fine-tuning job tagged with the context's DAG run; log, never raise.

    :func:`cancel_run_batches` for both kinds at once, under one budget: a failure callback
    (``on_failure_callback=cancel_run_work``) or, on Airflow 3.2+, a deadline's ``SyncCallback``.

    :param context: A task's or a DAG's callback context, or a deadline's (``dag_run`` a dict).
    :param conn_id: The connection.
    :param timeout_sec: Longest time the callback takes, both listings and every cancel included.
    :param max_concurrency: Cancels sent at once per kind, 1 to 200.
    """
    _run_sync(
        _cancel_run_work,
        "cancel_run_work",
        context,
        conn_id=conn_id,
        timeout_sec=timeout_sec,
        max_concurrency=max_concurrency,
    )


async def acancel_run_work(
    context: Mapping[str, Any],
    *,
    conn_id: str = DEFAULT_CONN_ID,
    timeout_sec: float = DEFAULT_TIMEOUT_SEC,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
) -> str | None:
    """Cancel every running batch and fine-tuning job tagged with the context's DAG run, without blocking.

    :func:`acancel_run_batches` for both kinds at once, under one budget: a Deadline Alert's
    ``AsyncCallback(acancel_run_work, kwargs={...})`` (Airflow 3.1+), or awaited with a task's context.

    :return: The summary lines of both kinds, or None when nothing could be done.
    """
    return await _run_async(
        _cancel_run_work,
        "acancel_run_work",
        context,
        conn_id=conn_id,
        timeout_sec=timeout_sec,
        max_concurrency=max_concurrency,
    )


def _run_sync(
    cleanup: _Cleanup, name: str, context: Mapping[str, Any], *, conn_id: str, timeout_sec: float, max_concurrency: int
) -> None:
    """Run a cleanup as a synchronous callback does: options checked, one budget, its own event loop."""
    from airflow_psopenai.client.deadline import Deadline

    try:
        _check_options(conn_id, timeout_sec, max_concurrency)
        deadline = Deadline.budget(timeout_sec)
    except Exception as error:  # a callback must never fail the run's bookkeeping
        log.error("%s: %s", name, error)
        return
    _run_in_own_loop(cleanup, name, context, conn_id=conn_id, deadline=deadline, max_concurrency=max_concurrency)


def _run_in_own_loop(
    cleanup: _Cleanup, name: str, context: Mapping[str, Any], *, conn_id: str, deadline: Deadline, max_concurrency: int
) -> None:
    """Run a cleanup within ``deadline`` in an event loop of its own; log, never raise."""
    import asyncio

    from airflow_psopenai.hooks import PSOpenAIHook

    try:
        hook = PSOpenAIHook(conn_id, timeout_sec=_request_timeout(deadline))
        _ = hook.settings  # looked up synchronously, as tasks do; the async core finds it resolved
        asyncio.run(_closing(cleanup(hook, context, deadline, max_concurrency, name)))
    except Exception as error:  # a callback must never fail the run's bookkeeping
        _log_failure(name, conn_id, error, context)


async def _run_async(
    cleanup: _Cleanup, name: str, context: Mapping[str, Any], *, conn_id: str, timeout_sec: float, max_concurrency: int
) -> str | None:
    """Await a cleanup as an async callback does, on the caller's event loop; log, never raise."""
    from airflow_psopenai.client.deadline import Deadline
    from airflow_psopenai.hooks import PSOpenAIHook

    try:
        _check_options(conn_id, timeout_sec, max_concurrency)
        deadline = Deadline.budget(timeout_sec)
        hook = PSOpenAIHook(conn_id, timeout_sec=timeout_sec)
        return await cleanup(hook, context, deadline, max_concurrency, name)
    except Exception as error:  # a callback must never fail the run's bookkeeping
        _log_failure(name, conn_id, error, context)
        return None


async def _cancel_run_work(
    hook: PSOpenAIHook, context: Mapping[str, Any], deadline: Deadline, max_concurrency: int, name: str
) -> str:
    """Clean up the run's batches and its fine-tuning jobs side by side, under the one ``deadline``.

    One kind's failure (its list cannot be read, its part ran out of time) does not stop the other's.
    """
    import asyncio

    kinds = {"batch": "batches", "fine_tuning_job": "fine-tuning jobs"}
    done = await asyncio.gather(
        *(_cancel_run_batches(hook, context, deadline, max_concurrency, name, kind=kind) for kind in kinds),
        return_exceptions=True,
    )
    summaries = []
    for plural, outcome in zip(kinds.values(), done, strict=True):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome  # a cancelled await stops the callback
            _log_failure(f"{name} ({plural})", hook.conn_id, outcome, context)
            summaries.append(f"{name}: the run's {plural} could not be cleaned up: {outcome}")
        else:
            summaries.append(outcome)
    return " ".join(summaries)


def _check_options(conn_id: object, timeout_sec: object, max_concurrency: object) -> None:
    require_conn_id(conn_id)
    require_positive_seconds(timeout_sec, "timeout_sec")
    require_concurrency(max_concurrency)


def _request_timeout(deadline: Deadline) -> float | None:
    left = deadline.poll_limit()
    return None if left is None else max(left, 0.001)


def _log_failure(name: str, conn_id: str, error: Exception, context: Mapping[str, Any]) -> None:
    from airflow_psopenai.exceptions import PSOpenAIError
    from airflow_psopenai.run_tags import deployment

    run_log = _run_log(context)
    ours = deployment()
    if isinstance(error, PSOpenAIError | TimeoutError):  # says what went wrong by itself: one line, no traceback
        run_log.error(
            "%s could not cancel the run's work of deployment %r (connection %r): %s", name, ours, conn_id, error
        )
    else:
        run_log.exception("%s could not cancel the run's work of deployment %r (connection %r).", name, ours, conn_id)


def _run_log(context: Mapping[str, Any]) -> logging.Logger | logging.LoggerAdapter:  # type: ignore[type-arg]
    """Return the callbacks' logger naming the context's DAG run on every line (the plain one without a run)."""
    from airflow_psopenai.run_tags import RunLogger

    try:
        dag_id, run_id, _ = run_of(context)
    except Exception:  # no run to name: the failure itself says so
        return log
    return RunLogger(log, dag_id, run_id)


async def _closing(cancel: Any) -> None:
    from airflow_psopenai.client.pool import aclose_shared_clients

    try:
        await cancel
    finally:
        await aclose_shared_clients()


async def _cancel_run_batches(
    hook: PSOpenAIHook,
    context: Mapping[str, Any],
    deadline: Deadline,
    max_concurrency: int,
    name: str,
    *,
    kind: str = "batch",
) -> str:
    """List the run's batches (or fine-tuning jobs: ``kind``) and cancel the running ones, all within ``deadline``."""
    import asyncio

    from airflow_psopenai.cancelling.bulk import (
        ANSWER_LOST,
        CANCEL_SENT,
        CANCEL_UNDER_WAY,
        alist_run_batches,
        alist_run_fine_tuning_jobs,
        cancel_each,
    )
    from airflow_psopenai.cancelling.cancel import CancelPolicy
    from airflow_psopenai.resources import BATCH, FINE_TUNING_JOB, counted, has_status, status_of
    from airflow_psopenai.run_tags import deployment

    resource, list_run, noun = (
        (BATCH, alist_run_batches, "batch")
        if kind == "batch"
        else (FINE_TUNING_JOB, alist_run_fine_tuning_jobs, "fine-tuning job")
    )

    dag_id, run_id, run_after = run_of(context)
    run_log = _run_log(context)
    ours = deployment()
    left = deadline.poll_limit()
    try:
        # A guard of last resort, for what takes no deadline (a connection lookup): the budget itself ends the
        # listing and the cancels, each batch reported, within it.
        async with asyncio.timeout(None if left is None else left + LAST_RESORT_GRACE_SEC):
            # The listing has a part of the budget; what it found is cancelled even when it could not read all.
            listed = await list_run(hook, dag_id, run_id, run_after, run_log, deadline=deadline)
            batches = listed.found
            # A listed status that is no status at all is looked at (each look falls back to its own GET).
            pending = [str(b["id"]) for b in batches if status_of(b) in resource.cancellable or not has_status(b)]
            policy = CancelPolicy(if_not_cancellable="succeed")
            outcomes = await cancel_each(
                hook, pending, policy, max_concurrency=max_concurrency, deadline=deadline, resource=resource
            )
    except TimeoutError:
        raise TimeoutError(
            f"{name} did not finish within its time budget for run {run_id!r} of {dag_id!r} (deployment {ours!r})."
        ) from None
    for outcome in outcomes:
        run_log.info("%s (deployment %r): %s", name, ours, outcome.line())
    actions = [outcome.action for outcome in outcomes]
    lost, under_way = actions.count(ANSWER_LOST), actions.count(CANCEL_UNDER_WAY)
    failed = sum(1 for outcome in outcomes if outcome.error is not None and outcome.action != ANSWER_LOST)
    summary = (
        f"{name}: run {run_id!r} of {dag_id!r} (deployment {ours!r}): {counted(len(batches), noun)} tagged with it, "
        f"{len(pending)} running: "
        f"{counted(actions.count(CANCEL_SENT), 'cancel')} sent, "
        + (f"{lost} sent whose answer did not arrive (they may have gone through), " if lost else "")
        + (f"{under_way} left to another cancel of them under way in this process, " if under_way else "")
        + f"{failed} could not be cancelled."
        + (f" Not looked at: {listed.what_was_not_read(resource.label)}." if not listed.complete else "")
        + "".join(f" {count} {why}." for why, count in listed.set_apart.items())
    )
    if listed.complete:
        run_log.info(summary)
    else:
        run_log.warning(summary)
    return summary


def run_of(context: Mapping[str, Any]) -> tuple[str, str, float | None]:
    """Return the DAG ID, run ID and ``run_after`` (epoch seconds) of the DAG run in a callback's ``context``.

    A task's or a failure callback's context holds a DagRun object; a deadline's holds the REST API's
    DAG run as a dict (``dag_id``, ``dag_run_id``, ``run_after`` as ISO 8601 text). ``run_after`` may be a
    datetime, its ISO 8601 text or epoch seconds; without a time zone it is UTC, as Airflow takes it.

    :raises PSOpenAIConfigurationError: When the context holds no DAG run, or a ``run_after`` that is no moment.
    """
    from airflow_psopenai.client.validation import as_epoch_seconds
    from airflow_psopenai.exceptions import PSOpenAIConfigurationError

    dag_run = context.get("dag_run") if hasattr(context, "get") else None
    if isinstance(dag_run, dict):
        dag_id, run_id, run_after = dag_run.get("dag_id"), dag_run.get("dag_run_id"), dag_run.get("run_after")
    else:
        dag_id, run_id = getattr(dag_run, "dag_id", None), getattr(dag_run, "run_id", None)
        run_after = getattr(dag_run, "run_after", None)
    if not dag_id or not run_id:
        raise PSOpenAIConfigurationError(
            f"The callback's context names no DAG run (its dag_run is {type(dag_run).__name__}): "
            "pass the context Airflow gives the callback."
        )
    moment = None if run_after is None else as_epoch_seconds(run_after, "The DAG run's run_after")
    return str(dag_id), str(run_id), moment
