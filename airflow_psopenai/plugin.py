"""The provider's plugin: a listener that cancels the batches of every DAG run that fails, however it fails.

Airflow tells listeners of a failed run where it happens: the scheduler (a task failed, the
``dagrun_timeout`` passed) and the API server (a user marked the run failed in the UI or through
the REST API, where no DAG callback runs). Off unless ``[psopenai] cancel_batches_of_failed_runs``
is true (``AIRFLOW__PSOPENAI__CANCEL_BATCHES_OF_FAILED_RUNS=True``): it acts on every DAG of the
deployment. ``[psopenai] cleanup_conn_id`` names the connection (default ``psopenai_default``).

A DAG with a failure callback (``on_failure_callback=cancel_run_batches``) is left to it for the
failures Airflow reports to callbacks (a task failed, the timeout passed, a deadlock), so that two
cleanups do not race: the listener still covers a run marked failed by hand. (Airflow 3.0 reports
a timed-out run to listeners without saying so: there, both may send a cancel, which is harmless.)

The cancels run in a thread of their own, bounded in time, so neither the scheduler's loop nor the
API request waits for them; errors are logged, never raised.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

from airflow.listeners import hookimpl
from airflow.providers.common.compat.sdk import AirflowPlugin, conf

from airflow_psopenai.bases.resource_task import DEFAULT_CONN_ID

log = logging.getLogger(__name__)

SECTION = "psopenai"
# What the scheduler says when it fails a run; the DAG's failure callback runs for these too.
SCHEDULER_REASONS = frozenset({"task_failure", "timed_out", "all_tasks_deadlocked"})
TIMEOUT_SEC = 120.0


class FailedRunListener:
    """Cancel the running batches tagged with a DAG run that failed (see the module's docstring)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        """Start cancelling the run's batches in the background."""
        try:
            if not conf.getboolean(SECTION, "cancel_batches_of_failed_runs", fallback=False):
                return
            if msg in SCHEDULER_REASONS and getattr(getattr(dag_run, "dag", None), "has_on_failure_callback", False):
                return
            conn_id = conf.get(SECTION, "cleanup_conn_id", fallback=DEFAULT_CONN_ID)
            # Plain values: the ORM object must not be used from another thread.
            run = SimpleNamespace(
                dag_id=str(dag_run.dag_id), run_id=str(dag_run.run_id), run_after=getattr(dag_run, "run_after", None)
            )
            thread = threading.Thread(
                target=_cancel, args=(run, conn_id), name=f"psopenai-cancel-{run.run_id}", daemon=True
            )
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            thread.start()
        except Exception:  # a listener must never break the scheduler or the API server
            log.exception("Could not start cancelling the batches of the failed run.")


def _cancel(run: Any, conn_id: str) -> None:
    from airflow_psopenai.callbacks import cancel_run_batches_with

    log.info("DAG run %r of %r failed: cancelling its batches (connection %r).", run.run_id, run.dag_id, conn_id)
    cancel_run_batches_with(conn_id, timeout_sec=TIMEOUT_SEC)({"dag_run": run})


failed_run_listener = FailedRunListener()


class PSOpenAIPlugin(AirflowPlugin):
    """Registers :data:`failed_run_listener`."""

    name = "psopenai"
    listeners = [failed_run_listener]
