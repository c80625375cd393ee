"""What differs between the Airflow 3 lines and apache-airflow-providers-common-compat does not cover.

Everything else that moved between 3.0 and 3.3 is imported from
``airflow.providers.common.compat.sdk`` where it is used.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_2_PLUS, AIRFLOW_V_3_3_PLUS

if AIRFLOW_V_3_2_PLUS:
    from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout
else:  # importing them from airflow.exceptions is deprecated from 3.2 on
    from airflow.exceptions import TaskDeferralError, TaskDeferralTimeout  # type: ignore[no-redef]

__all__ = [
    "DEADLINE_ALERTS",
    "MISSING_DEADLINE_ALERTS",
    "TaskDeferralError",
    "TaskDeferralTimeout",
    "amask_secret",
    "dag_run_state",
]

# Deadline Alerts came with Airflow 3.1 (AsyncCallback, run in the triggerer); 3.2 added SyncCallback,
# run by the executor, and exports the names from airflow.sdk (3.1 has them in airflow.sdk.definitions.deadline).
DEADLINE_ALERTS = AIRFLOW_V_3_1_PLUS
MISSING_DEADLINE_ALERTS = "Deadline Alerts (DAG(deadline=DeadlineAlert(...))) came with Airflow 3.1"
_DEADLINE_NAMES = frozenset({"AsyncCallback", "SyncCallback", "DeadlineAlert", "DeadlineReference"})


def __getattr__(name: str) -> Any:
    """Return ``AsyncCallback``, ``SyncCallback``, ``DeadlineAlert`` or ``DeadlineReference`` from where this
    Airflow has them, imported only when asked for (on 3.1 they come with the metadata database's models).

    :raises ImportError: On Airflow 3.0, naming the missing feature.
    """
    if name not in _DEADLINE_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not DEADLINE_ALERTS:
        raise ImportError(f"{name}: {MISSING_DEADLINE_ALERTS}; this Airflow has none.")
    if AIRFLOW_V_3_2_PLUS:
        import airflow.sdk as where
    else:
        import airflow.sdk.definitions.deadline as where  # type: ignore[no-redef]
    return getattr(where, name)


async def amask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's secrets masker without blocking the event loop.

    Airflow 3.3 has an asynchronous call for it; before, the synchronous one talks to the supervisor
    and runs in a thread here (on the event loop of a 3.0 triggerer it would raise).
    """
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as mask

        await mask(secret)
        return
    from airflow.providers.common.compat.sdk import mask_secret
    from asgiref.sync import sync_to_async

    await sync_to_async(mask_secret, thread_sensitive=False)(secret)


def dag_run_state(ti: Any, dag_id: str, run_id: str) -> str:
    """Return the state of another DAG run, asked by the running task ``ti`` through the Task SDK (3.0-3.3:
    ``RuntimeTaskInstance.get_dagrun_state``); ``"missing"`` when Airflow answers it does not know the run.

    :raises Exception: When the lookup fails otherwise (the API server's error, the supervisor's).
    """
    from airflow.sdk.api.client import ServerResponseError
    from airflow.sdk.exceptions import AirflowRuntimeError

    try:
        state = ti.get_dagrun_state(dag_id, run_id)
    except AirflowRuntimeError as error:  # from the supervisor of a task process
        detail = getattr(error.error, "detail", None)
        if isinstance(detail, dict) and detail.get("status_code") == 404:
            return "missing"
        raise
    except ServerResponseError as error:  # in-process (dag.test()): the API client's own error
        if error.response.status_code == 404:
            return "missing"
        raise
    return str(getattr(state, "value", state))  # a DagRunState in-process, its text from the supervisor
