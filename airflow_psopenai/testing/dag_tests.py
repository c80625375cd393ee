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
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow.models.dagrun import DagRun

    from airflow_psopenai.testing.emulator import OpenAIEmulator

DEFAULT_CONNECTION_ENV = "AIRFLOW_CONN_PSOPENAI_DEFAULT"


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
    """

    def __init__(self, dag_run: DagRun) -> None:
        self.dag_run = dag_run
        self.state = str(dag_run.state)
        self.task_states: dict[str, str] = {}
        self.tries: dict[str, int] = {}
        self.ended_at: dict[str, float] = {}
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


def dag_runner(dag_bag: Any) -> Callable[..., DagRunResult]:
    """Return ``run(dag_id, **conf)``: run a DAG of ``dag_bag`` with ``dag.test()`` and return its result.

    Deferred tasks run their triggers in the same process, as ``airflow dags test`` does.
    """

    def run(dag_id: str, /, **conf: Any) -> DagRunResult:
        dag = dag_bag.get_dag(dag_id)
        if dag is None:
            raise AirflowHomeError(f"No DAG {dag_id!r} in {dag_bag.dag_folder}; found: {sorted(dag_bag.dag_ids)}.")
        with _params_kept(dag), _task_log_handlers_kept():
            return DagRunResult(dag.test(run_conf=conf or None))

    return run


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
    "PrivateAirflowHome",
    "connection_json",
    "current_airflow_home",
    "dag_bag_class",
    "dag_runner",
    "leave_private_airflow_home",
    "load_dag_bag",
    "migrate_database",
    "use_private_airflow_home",
]
