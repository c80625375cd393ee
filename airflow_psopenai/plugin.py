"""The provider's plugin: the OpenAI page (a FastAPI app under ``/psopenai``, see :mod:`airflow_psopenai.web`), and
a listener that cancels the batches of every DAG run that fails, however it fails.

Every Airflow component loads the plugin; only the API server serves the page. The app is named by its
path and built at its first request, so that loading the plugin imports no FastAPI and none of the page.

Airflow tells listeners of a failed run where it happens: the scheduler (a task failed, the
``dagrun_timeout`` passed) and the API server (a user marked the run failed in the UI or through
the REST API, where no DAG callback runs). Off unless ``[psopenai] cancel_batches_of_failed_runs``
is true (``AIRFLOW__PSOPENAI__CANCEL_BATCHES_OF_FAILED_RUNS=True``): it acts on every DAG of the
deployment. ``[psopenai] cleanup_conn_id`` names the connection (default ``psopenai_default``).

A DAG with a failure callback (``on_failure_callback=cancel_run_batches``) is left to it for the
failures Airflow reports to callbacks (a task failed, the timeout passed, a deadlock), so that two
cleanups do not race: the listener still covers a run marked failed by hand. (Airflow 3.0 reports
a timed-out run to listeners without saying so: there, both may send a cancel, which is harmless.)

The cleanups run in threads of their own, so neither the scheduler's loop nor the API request waits
for them: at most ``MAX_CLEANUPS`` at once per process, the others queued (none dropped), each bounded
as a whole by ``[psopenai] cleanup_timeout_sec`` (default 120) from its start. When the process
shuts down, queued cleanups are dropped (logged) and the running ones send nothing more. Errors are
logged, never raised.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import threading
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from airflow.listeners import hookimpl
from airflow.providers.common.compat.sdk import AirflowPlugin, conf
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.resource_task import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from airflow_psopenai.client.deadline import Deadline

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger(__name__)

SECTION = "psopenai"
# What the scheduler says when it fails a run; the DAG's failure callback runs for these too.
SCHEDULER_REASONS = frozenset({"task_failure", "timed_out", "all_tasks_deadlocked"})
TIMEOUT_SEC = 120.0
# Cleanups at once per process: each lists the account's batches, and they share its rate limit.
MAX_CLEANUPS = 4


class FailedRunListener:
    """Cancel the running batches tagged with a DAG run that failed (see the module's docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[tuple[Any, str]] = collections.deque()
        self._running: set[Deadline] = set()  # the budgets of the cleanups running now
        self._workers: list[threading.Thread] = []
        self._idle = threading.Condition(self._lock)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        """Queue the cancelling of the run's batches, to run in the background."""
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
            self._submit(run, conn_id)
        except Exception:  # a listener must never break the scheduler or the API server
            log.exception("Could not start cancelling the batches of the failed run.")

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        """Stop cleaning up: the process is shutting down."""
        self.stop()

    def stop(self) -> None:
        """Drop the queued cleanups and end the running ones' budgets: they send nothing more.

        A run that fails afterwards is cleaned up again: a process that runs tasks in-process (``dag.test``)
        tells listeners it stops at the end of each task, and goes on.
        """
        with self._lock:
            dropped = [run for run, _ in self._queue]
            self._queue.clear()
            for deadline in self._running:
                deadline.end_now()
            self._idle.notify_all()
        for run in dropped:
            log.warning("Shutting down: the batches of DAG run %r of %r were not cancelled.", run.run_id, run.dag_id)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until no cleanup is queued or running; return whether that happened within ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._queue and not self._running, timeout)

    def _submit(self, run: Any, conn_id: str) -> None:
        with self._lock:
            self._queue.append((run, conn_id))
            self._workers = [worker for worker in self._workers if worker.is_alive()]
            busy = len(self._running)
            if len(self._workers) < MAX_CLEANUPS and len(self._workers) < busy + len(self._queue):
                worker = threading.Thread(target=self._work, name="psopenai-cleanup", daemon=True)
                self._workers.append(worker)
                worker.start()

    def _work(self) -> None:
        from airflow_psopenai.client.deadline import Deadline

        timeout = _cleanup_timeout()
        while True:
            with self._lock:
                if not self._queue:
                    self._workers = [w for w in self._workers if w is not threading.current_thread()]
                    self._idle.notify_all()
                    return
                run, conn_id = self._queue.popleft()
                deadline = Deadline.budget(timeout)
                self._running.add(deadline)
            try:
                _cancel(run, conn_id, deadline)
            except Exception:  # the next one still runs
                log.exception("Cancelling the batches of DAG run %r failed.", run.run_id)
            finally:
                with self._lock:
                    self._running.discard(deadline)
                    self._idle.notify_all()


def _cleanup_timeout() -> float:
    """Return ``[psopenai] cleanup_timeout_sec``; a value that is no number of seconds above 0 is logged, not used."""
    from airflow_psopenai.client.validation import require_positive_seconds

    text = conf.get(SECTION, "cleanup_timeout_sec", fallback=None)
    if text is None:
        return TIMEOUT_SEC
    value: object = text
    with contextlib.suppress(ValueError):
        value = float(text)
    try:
        return require_positive_seconds(value, "[psopenai] cleanup_timeout_sec")
    except PSOpenAIConfigurationError as error:
        log.error("%s Using %g s instead.", error, TIMEOUT_SEC)
        return TIMEOUT_SEC


def _cancel(run: Any, conn_id: str, deadline: Deadline) -> None:
    from airflow_psopenai.callbacks import cancel_batches_of_run
    from airflow_psopenai.cancelling.concurrency import DEFAULT_MAX_CONCURRENCY
    from airflow_psopenai.run_tags import deployment

    log.info(
        "DAG run %r of %r failed: cancelling its batches of deployment %r (connection %r).",
        run.run_id,
        run.dag_id,
        deployment(),
        conn_id,
    )
    cancel_batches_of_run({"dag_run": run}, conn_id, deadline, DEFAULT_MAX_CONCURRENCY)


failed_run_listener = FailedRunListener()
# Processes that call no listener's before_stopping (the API server) stop at exit; the workers are daemons.
atexit.register(failed_run_listener.stop)


URL_PREFIX = "/psopenai"
PAGE_APP = "airflow_psopenai.web.app:create_app"


class LazyApp:
    """An ASGI app that imports and builds the app ``factory`` names (``module:function``) at its first call.

    :param factory: Where the function that returns the app lives.
    """

    def __init__(self, factory: str) -> None:
        self.factory = factory
        self._app: Any = None
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with the app, built once."""
        if self._app is None:
            import importlib

            with self._lock:  # once per process: the first request imports the app while the others wait
                if self._app is None:
                    module, _, function = self.factory.partition(":")
                    self._app = getattr(importlib.import_module(module), function)()
        await self._app(scope, receive, send)


page_app = LazyApp(PAGE_APP)
# Airflow 3.1+ shows plugin views in its UI; 3.0 has none (the page's JSON API still answers bearer tokens).
EXTERNAL_VIEWS: list[dict[str, Any]] = (
    [
        {
            "name": "OpenAI",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "psopenai",
        },
        {
            "name": "OpenAI batches",
            "href": f"{URL_PREFIX}/?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "psopenai-run",
        },
    ]
    if AIRFLOW_V_3_1_PLUS
    else []
)


class PSOpenAIPlugin(AirflowPlugin):
    """Registers the OpenAI page (its app, and its views on Airflow 3.1+) and :data:`failed_run_listener`."""

    name = "psopenai"
    listeners = [failed_run_listener]
    fastapi_apps = [{"app": page_app, "url_prefix": URL_PREFIX, "name": "OpenAI page"}]
    external_views = EXTERNAL_VIEWS

    @classmethod
    def on_load(cls, *args: Any, **kwargs: Any) -> None:
        """Warn when nothing names this deployment: its batches would look like another's of the account."""
        from airflow_psopenai.run_tags import DEFAULT_DEPLOYMENT, deployment_is_default

        if deployment_is_default():
            log.warning(
                "Neither [psopenai] deployment nor [api] base_url is set: this Airflow tags its batches "
                "airflow_deployment=%r. Where two Airflows share an OpenAI account, set [psopenai] deployment "
                "(AIRFLOW__PSOPENAI__DEPLOYMENT) to a name of each, or each cleans up the other's runs.",
                DEFAULT_DEPLOYMENT,
            )
