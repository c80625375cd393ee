"""Test harness: a private Airflow home on SQLite, a dags folder, and helpers to run DAGs against the emulator.

Airflow reads its configuration when first imported, so the environment is set here, before any
test module imports it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="psopenai-test-airflow-"))
# dag.test() only runs DAGs whose file lies in the configured dags folder: it holds copies of the
# test DAGs and the example DAGs.
DAGS_FOLDER = AIRFLOW_HOME / "dags"
DAGS_FOLDER.mkdir()
for source in [*sorted((REPO / "tests" / "dags").glob("*.py")), *sorted((REPO / "example_dags").glob("*.py"))]:
    shutil.copy(source, DAGS_FOLDER / source.name)

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # Wide enough that rich never wraps a task's error message across lines (Airflow 3.0 and 3.1
        # render task errors with rich), so that tests can look for it.
        "COLUMNS": "1000",
    }
)
for name in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_ORGANIZATION", "AIRFLOW_CONN_PSOPENAI_DEFAULT"):
    os.environ.pop(name, None)

pytest_plugins = ["airflow_psopenai.testing.pytest_plugin", "tests.fast_tier", "tests.worker_groups"]

# The same examples on every run (a flaky property would block every landing), no example database
# left behind; HYPOTHESIS_PROFILE=explore draws new examples, locally.
settings.register_profile(
    "psopenai",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile("explore", settings.get_profile("psopenai"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "psopenai"))

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow.models.dagrun import DagRun

    from airflow_psopenai.testing import OpenAIEmulator


def dag_bag_class() -> Any:
    """Return Airflow's DagBag class: it moved to airflow.dag_processing in 3.2 (the old path warns there)."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS

    if AIRFLOW_V_3_2_PLUS:
        from airflow.dag_processing.dagbag import DagBag
    else:
        from airflow.models.dagbag import DagBag
    return DagBag


def connection_json(emulator: OpenAIEmulator, **extra: Any) -> str:
    """Return an ``AIRFLOW_CONN_*`` value pointing at the emulator."""
    return json.dumps(
        {"conn_type": "psopenai", "host": emulator.api_base, "password": emulator.api_key, "extra": extra}
    )


@pytest.fixture
def emulator(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenAIEmulator:
    """Return a running emulator that the default connection points at."""
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(openai_emulator))
    return openai_emulator


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Create the metadata database once per session."""
    from airflow.utils import db

    db.resetdb()
    build_the_in_process_execution_api_once()


def build_the_in_process_execution_api_once() -> None:
    """Let dag.test() build its in-process execution API once per session, as Airflow 3.3 does.

    Airflow 3.3 caches ``in_process_api_server`` (``functools.lru_cache``); 3.0 to 3.2 build the whole
    FastAPI app again for every task run, 2 to 3 s each, which would triple the suite's time there.
    """
    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


@pytest.fixture(scope="session")
def dagbag(airflow_db: None) -> Any:
    """Return the DagBag of the test dags folder, failing on any import error."""
    bag = dag_bag_class()(str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    return bag


class DagRunResult:
    """A finished DAG run, with the task states and XComs a test asserts on."""

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


@pytest.fixture
def run_dag(dagbag: Any) -> Callable[..., DagRunResult]:
    """Return a function that runs a DAG of the test dags folder with ``dag.test()``."""

    def run(dag_id: str, **run_conf: Any) -> DagRunResult:
        dag = dagbag.get_dag(dag_id)
        assert dag is not None, f"no DAG {dag_id!r} in {DAGS_FOLDER}"
        return DagRunResult(dag.test(run_conf=run_conf or None))

    return run


# Airflow 3.0's dag.test() prints every message a task sends its in-process supervisor, at debug
# level, the secrets it asks to mask among them (InProcessSupervisorComms.send): Airflow's own line,
# which no provider can keep quiet.
AIRFLOW_MASK_REQUEST = re.compile(r"^.*Sending request\s+msg=MaskSecret\(.*$\n?", re.MULTILINE)


def without_airflows_mask_requests(logs: str) -> str:
    """Return ``logs`` without the lines in which Airflow 3.0's dag.test() echoes secrets it is asked to mask."""
    return AIRFLOW_MASK_REQUEST.sub("", logs)


@pytest.fixture
def captured_logs(capfd: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """Return a function giving everything written to stdout and stderr so far (task logs included)."""
    seen: list[str] = []

    def read() -> str:
        out, err = capfd.readouterr()
        seen.append(out + err)
        return "".join(seen)

    yield read
