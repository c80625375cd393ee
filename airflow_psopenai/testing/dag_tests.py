"""Run whole DAGs in tests: a private Airflow home on SQLite, the project's dags folder, and ``dag.test()``.

Airflow reads its configuration once, when it is first imported: :func:`use_private_airflow_home`
sets the environment before that, and refuses to run after it. Airflow itself is imported only
inside the functions below, never when this module is imported (the pytest plugin loads it in every
test run of a project that enables the plugin).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.models.dagrun import DagRun

    from airflow_psopenai.testing.emulator import OpenAIEmulator

DEFAULT_CONNECTION_ENV = "AIRFLOW_CONN_PSOPENAI_DEFAULT"


def deadline_run_unsupported() -> str | None:
    """Return why this Airflow's ``dag.test()`` cannot run a DAG with a Deadline Alert, or None when it can."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS, AIRFLOW_V_3_2_PLUS

    if AIRFLOW_V_3_1_PLUS and not AIRFLOW_V_3_2_PLUS:
        return (
            "Airflow 3.1's dag.test() evaluates a DAGRUN_QUEUED_AT deadline before its run is queued and fails "
            '("No matching record found in the database"); the scheduler creates runs queued'
        )
    return None


class AirflowHomeError(RuntimeError):
    """The private Airflow home cannot be set up, or is used without being set up."""


@dataclass(frozen=True)
class PrivateAirflowHome:
    """An Airflow home made for one test process.

    :param home: The folder (``AIRFLOW_HOME``), holding the SQLite metadata database.
    :param dags_folder: The DAG files ``dag.test()`` may run (``[core] dags_folder``).
    :param saved_environment: The variables as they were before, restored by :func:`leave_private_airflow_home`.
    """

    home: Path
    dags_folder: Path
    saved_environment: dict[str, str | None]


# The private home in use in this process (at most one).
_in_use: list[PrivateAirflowHome] = []


def use_private_airflow_home(dags_folder: Path) -> PrivateAirflowHome:
    """Point Airflow at a new, empty home (SQLite, no example DAGs) whose dags folder is ``dags_folder``.

    Call it before anything imports Airflow. Each process gets its own folder, so parallel test
    workers (pytest-xdist) never share a database file.

    :param dags_folder: The folder of the DAG files to test; ``dag.test()`` runs only DAGs whose file lies in it.
    :raises AirflowHomeError: Airflow was already imported (its configuration is read then), the
        folder does not exist, or a private home is already in use.
    """
    if _in_use:
        raise AirflowHomeError(f"A private Airflow home is already in use: {_in_use[0].home}.")
    if "airflow.configuration" in sys.modules:
        raise AirflowHomeError(
            "Airflow was imported before the private Airflow home was set up, so it already read another "
            "configuration. Import Airflow (and your DAGs' modules) inside tests and fixtures, not at the top "
            "of a conftest.py."
        )
    dags_folder = Path(dags_folder).resolve()
    if not dags_folder.is_dir():
        raise AirflowHomeError(f"The dags folder {dags_folder} does not exist: create it, or set psopenai_dags_folder.")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    home = Path(tempfile.mkdtemp(prefix=f"psopenai-airflow-{worker}-"))
    settings = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # Airflow's unit test mode changes what it does (and wants its own test configuration).
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    _in_use.append(PrivateAirflowHome(home=home, dags_folder=dags_folder, saved_environment=saved))
    return _in_use[0]


def leave_private_airflow_home() -> None:
    """Restore the environment and delete the private home's folder (the end of the test process)."""
    if not _in_use:
        return
    current = _in_use.pop()
    for name, value in current.saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(current.home, ignore_errors=True)


def current_airflow_home() -> PrivateAirflowHome:
    """Return the private Airflow home in use.

    :raises AirflowHomeError: None was set up, with what to do.
    """
    if not _in_use:
        raise AirflowHomeError(
            'No private Airflow home: set the dags folder to test, e.g. psopenai_dags_folder = "dags" under '
            "[tool.pytest.ini_options] (or pytest --psopenai-dags-folder=dags). The plugin then sets up a "
            "private Airflow home on SQLite before Airflow is imported."
        )
    return _in_use[0]


def migrate_database() -> None:
    """Create the private home's metadata database (once per test process: it takes seconds)."""
    current_airflow_home()
    from airflow.utils import db

    db.resetdb()
    _build_the_in_process_execution_api_once()


def _build_the_in_process_execution_api_once() -> None:
    """Let dag.test() build its in-process execution API once per process, as Airflow 3.3 does.

    Airflow 3.3 caches ``in_process_api_server`` (``functools.lru_cache``); 3.0 to 3.2 build the whole
    FastAPI app again for every task run, seconds each.
    """
    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


def dag_bag_class() -> Any:
    """Return Airflow's DagBag class: it moved to airflow.dag_processing in 3.2 (the old path warns there)."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS

    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing import dagbag
    else:
        from airflow.models import dagbag  # type: ignore[no-redef,attr-defined,unused-ignore]
    return dagbag.DagBag


def load_dag_bag(dags_folder: Path | None = None) -> Any:
    """Return the DagBag of ``dags_folder`` (default: the private home's).

    :raises AirflowHomeError: A DAG file failed to import, naming each file and its error.
    """
    folder = current_airflow_home().dags_folder if dags_folder is None else dags_folder
    # Only the folder: Airflow 3.2 removed arguments such as include_examples (the environment says it).
    bag = dag_bag_class()(str(folder))
    if bag.import_errors:
        errors = "\n".join(f"{path}:\n{error}" for path, error in bag.import_errors.items())
        raise AirflowHomeError(f"DAG files of {folder} failed to import:\n{errors}")
    return bag


def connection_json(emulator: OpenAIEmulator, **extra: Any) -> str:
    """Return an ``AIRFLOW_CONN_*`` value of type ``psopenai`` pointing at ``emulator``.

    :param extra: The connection's extras (``max_retry_count``, ``timeout_sec``, ...).
    """
    return json.dumps(
        {"conn_type": "psopenai", "host": emulator.api_base, "password": emulator.api_key, "extra": extra}
    )


class DagRunResult:
    """A finished DAG run, with the task states and XComs a test asserts on.

    :ivar dag_run: Airflow's DagRun.
    :ivar state: The run's state (``"success"``, ``"failed"``).
    :ivar task_states: Each task's state by task ID (``"task[2]"`` for a mapped task's index 2).
    :ivar tries: Each task's try number.
    :ivar ended_at: When each ended task ended, in epoch seconds.
    :ivar missed_deadlines: The deadlines :meth:`DagRunner.missing_deadlines` missed, and what their callbacks did.
    """

    def __init__(self, dag_run: DagRun) -> None:
        self.dag_run = dag_run
        self.state = str(dag_run.state)
        self.task_states: dict[str, str] = {}
        self.tries: dict[str, int] = {}
        self.ended_at: dict[str, float] = {}
        self.missed_deadlines: list[MissedDeadline] = []
        for ti in dag_run.get_task_instances():
            key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            self.task_states[key] = str(ti.state)
            self.tries[key] = ti.try_number
            if ti.end_date is not None:
                self.ended_at[key] = ti.end_date.timestamp()

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """Return one XCom value of this run (None when there is none)."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        # A plain select: XComModel.get_many returns a legacy Query on Airflow 3.0, a Select from 3.1 on.
        query = select(XComModel).where(
            XComModel.dag_id == self.dag_run.dag_id,
            XComModel.run_id == self.dag_run.run_id,
            XComModel.task_id == task_id,
            XComModel.map_index == map_index,
            XComModel.key == key,
        )
        with create_session() as session:
            row = session.scalars(query).first()
            return None if row is None else XComModel.deserialize_value(row)

    def rendered_fields(self, task_id: str) -> dict[str, Any]:
        """Return the rendered template fields Airflow stored for a task (what the UI shows)."""
        from airflow.models.renderedtifields import RenderedTaskInstanceFields
        from airflow.utils.session import create_session

        with create_session() as session:
            row = (
                session.query(RenderedTaskInstanceFields)
                .filter_by(dag_id=self.dag_run.dag_id, run_id=self.dag_run.run_id, task_id=task_id)
                .first()
            )
            return {} if row is None else dict(row.rendered_fields)


@dataclass(frozen=True)
class MissedDeadline:
    """A deadline of a run that :meth:`DagRunner.missing_deadlines` missed, and what its callback did.

    :param callback_path: The callback's import path (``airflow_psopenai.callbacks.acancel_run_batches``).
    :param kind: ``"AsyncCallback"`` (awaited as the triggerer awaits it) or ``"SyncCallback"`` (called as
        the executor calls it).
    :param state: The callback's state as Airflow records it: ``"success"`` or ``"failed"``.
    :param output: What the callback returned (its summary, for this provider's callbacks), or its error.
    """

    callback_path: str
    kind: str
    state: str
    output: str | None


class DagRunner:
    """``run(dag_id, **conf)``: run a DAG of a DagBag with ``dag.test()`` and return its result.

    Deferred tasks run their triggers in the same process, as ``airflow dags test`` does.
    ``dag.test()`` never misses a deadline (the scheduler does): :meth:`missing_deadlines` does, while the
    run runs.

    :param dag_bag: The DagBag whose DAGs it runs.
    """

    def __init__(self, dag_bag: Any) -> None:
        self.dag_bag = dag_bag

    def __call__(self, dag_id: str, /, **conf: Any) -> DagRunResult:
        """Run the DAG with ``conf`` and return its result."""
        with self._running(dag_id) as dag:
            return DagRunResult(dag.test(run_conf=conf or None))

    def missing_deadlines(self, dag_id: str, /, *, once_running: str, **conf: Any) -> DagRunResult:
        """Run the DAG with ``conf``, and miss its run's deadlines once task ``once_running`` runs.

        Missing a deadline is what Airflow's scheduler does when a run passes it (``Deadline.handle_miss``,
        with the context it builds: the REST API's DAG run as a dict, and the deadline); its callback then
        runs while the run goes on: an ``AsyncCallback`` as the triggerer runs it (the trigger Airflow
        stored for it), a ``SyncCallback`` as the executor calls it. Airflow 3.2 and later.

        :param once_running: The task whose start makes the run late (it is running, deferred or waiting for
            a reschedule). A run that ends before it starts misses no deadline.
        :return: The run's result; its ``missed_deadlines`` say what each callback did.
        :raises AirflowHomeError: On an Airflow line whose ``dag.test()`` cannot run a DAG with a Deadline
            Alert, or that has none.
        """
        import threading

        if reason := deadline_run_unsupported():
            raise AirflowHomeError(f"run_dag.missing_deadlines needs Airflow 3.2 or later: {reason}.")
        ended = threading.Event()
        missed: list[MissedDeadline] = []
        errors: list[BaseException] = []

        def miss_once_running() -> None:
            try:
                while not ended.is_set():
                    run_id = _running_run_of(dag_id, once_running)
                    if run_id is not None:
                        missed.extend(miss_deadlines(run_id))
                        return
                    ended.wait(0.05)
            except BaseException as error:  # handed to the test's thread
                errors.append(error)

        late = threading.Thread(target=miss_once_running, name=f"deadlines of {dag_id}", daemon=True)
        with self._running(dag_id) as dag:
            late.start()
            try:
                dag_run = dag.test(run_conf=conf or None)
            finally:
                ended.set()
                late.join()
        if errors:
            raise errors[0]
        result = DagRunResult(dag_run)
        result.missed_deadlines = missed
        return result

    @contextlib.contextmanager
    def _running(self, dag_id: str) -> Iterator[Any]:
        dag = self.dag_bag.get_dag(dag_id)
        if dag is None:
            raise AirflowHomeError(
                f"No DAG {dag_id!r} in {self.dag_bag.dag_folder}; found: {sorted(self.dag_bag.dag_ids)}."
            )
        with _params_kept(dag), _task_log_handlers_kept(), _deadline_alerts_by_their_ids():
            yield dag


def dag_runner(dag_bag: Any) -> DagRunner:
    """Return a :class:`DagRunner` of ``dag_bag``: ``run(dag_id, **conf)`` runs a DAG with ``dag.test()``."""
    return DagRunner(dag_bag)


# The states of a task that has started its work.
_STARTED = ("running", "deferred", "up_for_reschedule")


def _running_run_of(dag_id: str, task_id: str) -> int | None:
    """Return the database ID of the DAG's running run once its task ``task_id`` has started, else None."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(DagRun.id)
        .join(TaskInstance, (TaskInstance.dag_id == DagRun.dag_id) & (TaskInstance.run_id == DagRun.run_id))
        .where(DagRun.dag_id == dag_id, DagRun.state == "running")
        .where(TaskInstance.task_id == task_id, TaskInstance.state.in_(_STARTED))
    )
    with create_session() as session:
        return session.scalars(query).first()


def miss_deadlines(dag_run_id: int) -> list[MissedDeadline]:
    """Miss every deadline of a DAG run not yet missed, as the scheduler does, and run each callback (3.2+).

    A deadline the run has none for is added first, due now, as the scheduler adds it when it queues a run.

    ``Deadline.handle_miss`` builds the callback's context and queues it. An ``AsyncCallback`` is then run by
    the trigger Airflow stored for it, its events handed back as the triggerer hands them; a ``SyncCallback``
    is imported and called with its kwargs (the context among them), as the executor's workers call it.

    :param dag_run_id: The DAG run's database ID (``DagRun.id``).
    :return: What each callback did.
    """
    from airflow.models.deadline import Deadline
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        _add_the_runs_deadlines(dag_run_id, session)
    with create_session() as session:  # read back as the scheduler reads them, a loop later
        query = select(Deadline).where(Deadline.dagrun_id == dag_run_id, Deadline.missed.is_(False))
        deadlines = list(session.scalars(query))
        for deadline in deadlines:
            deadline.handle_miss(session)
        session.flush()
        # The callbacks as handle_miss left them: Airflow 3.2 changes an ExecutorCallback's data in place,
        # which its JSON column does not store, so the executor's workload carries the data in memory.
        callbacks = [(deadline.callback_id, copy.deepcopy(deadline.callback.data)) for deadline in deadlines]
    return [_run_callback(callback_id, data) for callback_id, data in callbacks]


def _add_the_runs_deadlines(dag_run_id: int, session: Any) -> None:
    """Add a deadline, due now, for each Deadline Alert of the run's DAG version that the run has none of.

    The scheduler adds them when it queues a run: ``dag.test()`` creates its run running, never queued, so
    a ``DAGRUN_QUEUED_AT`` deadline has no time there and Airflow adds no row for it.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.deadline import Deadline
    from airflow.models.deadline_alert import DeadlineAlert
    from airflow.models.serialized_dag import SerializedDagModel
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS
    from airflow.serialization.decoders import decode_deadline_alert
    from airflow.serialization.definitions.deadline import DeadlineAlertFields
    from airflow.serialization.enums import DagAttributeTypes, Encoding
    from sqlalchemy import select

    now = datetime.now(UTC)
    dag_run = session.get(DagRun, dag_run_id)
    known = set(session.scalars(select(Deadline.deadline_alert_id).where(Deadline.dagrun_id == dag_run_id)))
    version = select(SerializedDagModel.id).where(SerializedDagModel.dag_version_id == dag_run.created_dag_version_id)
    alerts = select(DeadlineAlert).where(DeadlineAlert.serialized_dag_id == version.scalar_subquery())
    for alert in session.scalars(alerts):
        if alert.id in known:
            continue
        definition = decode_deadline_alert(
            {
                Encoding.TYPE: DagAttributeTypes.DEADLINE_ALERT,
                Encoding.VAR: {
                    DeadlineAlertFields.REFERENCE: alert.reference,
                    DeadlineAlertFields.INTERVAL: alert.interval,
                    DeadlineAlertFields.CALLBACK: alert.callback_def,
                },
            }
        )
        bundle = {"bundle_name": dag_run.dag_model.bundle_name} if AIRFLOW_V_3_3_PLUS else {}
        deadline = Deadline(
            deadline_time=now,
            callback=definition.callback,
            dagrun_id=dag_run.id,
            deadline_alert_id=alert.id,
            dag_id=dag_run.dag_id,
            **bundle,
        )
        session.add(deadline)


def _imported(path: str) -> Any:
    """Return the object at the import path ``path`` (``module.name``), as Airflow's ``import_string`` does."""
    import importlib

    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _run_callback(callback_id: Any, data: dict[str, Any]) -> MissedDeadline:
    """Run one queued deadline callback as the triggerer or the executor runs it; record its outcome.

    :param callback_id: The callback's ID.
    :param data: Its data as ``handle_miss`` made it (the import path, and the kwargs with the context).
    """
    import asyncio

    from airflow.models.callback import Callback, ExecutorCallback
    from airflow.models.trigger import Trigger
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import CallbackState

    with create_session() as session:
        callback: Any = session.get(Callback, callback_id)
        path, kwargs = str(data["path"]), dict(data.get("kwargs") or {})
        executor_callback = isinstance(callback, ExecutorCallback)
        if not executor_callback:
            trigger_id = callback.trigger_id
            trigger = _imported(callback.trigger.classpath)(**callback.trigger.kwargs)
    if executor_callback:
        try:
            state, returned = CallbackState.SUCCESS, _imported(path)(**kwargs)
        except Exception as error:  # recorded as the executor records it
            state, returned = CallbackState.FAILED, f"{type(error).__name__}: {error}"
        output = None if returned is None else str(returned)
        with create_session() as session:
            callback = session.get(Callback, callback_id)
            callback.state, callback.output = state, output
        return MissedDeadline(path, "SyncCallback", str(state), output)

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    payloads = asyncio.run(events())
    with create_session() as session:
        callback = session.get(Callback, callback_id)
        for payload in payloads:
            callback.handle_event(TriggerEvent(payload), session)
        session.flush()
        session.execute(Trigger.__table__.delete().where(Trigger.id == trigger_id))
        return MissedDeadline(path, "AsyncCallback", str(callback.state), callback.output)


@contextlib.contextmanager
def _deadline_alerts_by_their_ids() -> Iterator[None]:
    """Give the DAG that ``dag.test()`` schedules the IDs of its Deadline Alerts, as the scheduler's DAG has them.

    From Airflow 3.2 on, a DAG's ``deadline`` as stored holds the IDs of its ``deadline_alert`` rows, and
    ``DagRun.update_state`` looks each up by ID when the run succeeds (to drop the deadlines it no longer
    needs). ``dag.test()`` schedules a DAG it deserialised from its own serialisation, whose ``deadline``
    holds the alerts' definitions: the look-up fails (``'dict' object has no attribute 'hex'``). Here the
    stored IDs replace the definitions when ``dag.test()`` creates its run, after it wrote the DAG to the
    database.
    """
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS

    if not AIRFLOW_V_3_2_PLUS:  # 3.1 keeps the definitions and reads them as such; 3.0 has no Deadline Alerts
        yield
        return
    from unittest import mock

    from airflow.models import dagrun
    from airflow.models.serialized_dag import SerializedDagModel

    create_run = dagrun.get_or_create_dagrun

    def get_or_create_dagrun(*, dag: Any, session: Any, **kwargs: Any) -> Any:
        if dag.deadline and not all(isinstance(alert_id, str) for alert_id in dag.deadline):
            stored = SerializedDagModel.get_dag(dag.dag_id, session=session)
            if stored is not None:
                dag.deadline = stored.deadline
        return create_run(dag=dag, session=session, **kwargs)

    with mock.patch.object(dagrun, "get_or_create_dagrun", get_or_create_dagrun):
        yield


@contextlib.contextmanager
def _task_log_handlers_kept() -> Iterator[None]:
    """Take away the task log handlers a run adds.

    Airflow 3.0's ``dag.test()`` adds a handler on the ``sys.stdout`` of the moment to the ``airflow.task``
    logger and never removes it: under pytest, whose captures replace ``sys.stdout`` per test, every later
    test would log into a closed stream ("--- Logging error ---" and the message again).
    """
    task_logger = logging.getLogger("airflow.task")
    before = list(task_logger.handlers)
    try:
        yield
    finally:
        for handler in [handler for handler in task_logger.handlers if handler not in before]:
            task_logger.removeHandler(handler)


@contextlib.contextmanager
def _params_kept(dag: Any) -> Iterator[None]:
    """Give the DAG's and its tasks' params their values back after a run.

    Airflow 3.3's ``process_params`` writes a run's conf into the tasks' own ``Param`` objects: in
    one process (``dag.test()`` on one DagBag) a run's conf would become the next run's default.
    """
    holders = [dag.params, *(task.params for task in dag.tasks)]
    saved = [(param, copy.deepcopy(param.value)) for holder in holders for param in map(holder.get_param, holder)]
    try:
        yield
    finally:
        for param, value in saved:
            param.value = value


__all__ = [
    "AirflowHomeError",
    "DagRunResult",
    "DagRunner",
    "MissedDeadline",
    "PrivateAirflowHome",
    "connection_json",
    "current_airflow_home",
    "dag_bag_class",
    "dag_runner",
    "deadline_run_unsupported",
    "leave_private_airflow_home",
    "load_dag_bag",
    "migrate_database",
    "miss_deadlines",
    "use_private_airflow_home",
]
