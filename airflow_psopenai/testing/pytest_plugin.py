"""The pytest fixtures: ``openai_emulator``, and ``run_dag`` to test whole DAGs against it.

Enable them with ``pytest_plugins = ["airflow_psopenai.testing.pytest_plugin"]`` in a top-level
``conftest.py``.

``run_dag`` needs the dags folder to test: ``psopenai_dags_folder = "dags"`` under
``[tool.pytest.ini_options]`` (relative to that file), or ``--psopenai-dags-folder``. Only then does
the plugin give the test process a private Airflow home on SQLite, before Airflow is imported (it
reads its configuration then); without it, the plugin leaves Airflow's configuration alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.testing.emulator import OpenAIEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_psopenai.testing.dag_tests import DagRunner
    from airflow_psopenai.testing.objects import BatchSchedule

FIXTURE_CANCEL_DELAY = 0.2
DAGS_FOLDER_INI = "psopenai_dags_folder"
DAGS_FOLDER_OPTION = "--psopenai-dags-folder"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the dags folder setting (an ini value and a command-line option)."""
    help_text = (
        "Folder of the DAG files that the run_dag fixture runs; setting it gives the test process a private "
        "Airflow home on SQLite."
    )
    parser.addini(DAGS_FOLDER_INI, help=f"{help_text} Relative to the ini file.", default=None)
    parser.getgroup("airflow-psopenai").addoption(
        DAGS_FOLDER_OPTION,
        dest="psopenai_dags_folder",
        default=None,
        help=f"{help_text} Relative to the current folder.",
    )


def configured_dags_folder(config: pytest.Config) -> Path | None:
    """Return the dags folder the option or the ini value names, or None when neither is set."""
    option = config.getoption("psopenai_dags_folder")
    if option:
        return config.invocation_params.dir / str(option)
    value = config.getini(DAGS_FOLDER_INI)
    if not value:
        return None
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    return base / str(value)


def pytest_configure(config: pytest.Config) -> None:
    """Set up the private Airflow home when a dags folder is configured (before any test module imports Airflow)."""
    dags_folder = configured_dags_folder(config)
    if dags_folder is None:
        return
    from airflow_psopenai.testing.dag_tests import AirflowHomeError, use_private_airflow_home

    try:
        use_private_airflow_home(dags_folder)
    except AirflowHomeError as error:
        raise pytest.UsageError(f"airflow-psopenai: {error}") from None


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give the environment back and remove the private Airflow home."""
    from airflow_psopenai.testing.dag_tests import leave_private_airflow_home

    leave_private_airflow_home()


@pytest.fixture
def psopenai_batch_schedule() -> BatchSchedule | None:
    """Return how the ``openai_emulator``'s batches progress, complete and expire: None, they never move on.

    Override it in a ``conftest.py`` or a test module to give every batch of those tests a schedule,
    e.g. ``return BatchSchedule(complete_after=2.0)``.
    """
    return None


@pytest.fixture
def openai_emulator(psopenai_batch_schedule: BatchSchedule | None) -> Iterator[OpenAIEmulator]:
    """Yield a running emulator (free port on 127.0.0.1, ``cancel_delay`` 0.2 s), stopped afterwards.

    Its batches follow ``psopenai_batch_schedule`` (by default none: they stay as they were created).
    """
    with OpenAIEmulator(cancel_delay=FIXTURE_CANCEL_DELAY, batch_schedule=psopenai_batch_schedule) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def psopenai_airflow_db() -> None:
    """Create the private Airflow home's metadata database, once per test process."""
    from airflow_psopenai.testing.dag_tests import AirflowHomeError, migrate_database

    try:
        migrate_database()
    except AirflowHomeError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def psopenai_dagbag(psopenai_airflow_db: None) -> Any:
    """Return the DagBag of the configured dags folder; an import error of any DAG file fails the test."""
    from airflow_psopenai.testing.dag_tests import AirflowHomeError, load_dag_bag

    try:
        return load_dag_bag()
    except AirflowHomeError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
def run_dag(psopenai_dagbag: Any, openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> DagRunner:
    """Return ``run_dag(dag_id, **conf)``: run the DAG with ``dag.test()`` against ``openai_emulator``.

    The connection ``psopenai_default`` points at the emulator for the test. The result has the
    run's ``state``, each task's state in ``task_states``, and ``xcom(task_id)``.
    ``run_dag.missing_deadlines(dag_id, once_running=task_id, **conf)`` misses the run's deadlines
    once that task runs, and runs their callbacks as Airflow would (3.2+).
    """
    from airflow_psopenai.testing.dag_tests import DEFAULT_CONNECTION_ENV, connection_json, dag_runner

    monkeypatch.setenv(DEFAULT_CONNECTION_ENV, connection_json(openai_emulator))
    return dag_runner(psopenai_dagbag)
