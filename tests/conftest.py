"""Test harness: a private Airflow home on SQLite, a dags folder, and helpers to run DAGs against the emulator.

Airflow reads its configuration when first imported, so the environment is set here, before any
test module imports it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

from airflow_psopenai.testing.dag_tests import (
    DagRunResult,
    connection_json,
    dag_bag_class,
    dag_runner,
    use_private_airflow_home,
)

REPO = Path(__file__).resolve().parent.parent
# dag.test() only runs DAGs whose file lies in the configured dags folder: it holds copies of the
# test DAGs and the example DAGs. One per process (pytest-xdist workers each have theirs).
DAGS_FOLDER = Path(tempfile.mkdtemp(prefix="psopenai-test-dags-"))
for source in [*sorted((REPO / "tests" / "dags").glob("*.py")), *sorted((REPO / "example_dags").glob("*.py"))]:
    shutil.copy(source, DAGS_FOLDER / source.name)
# The plugin's machinery, as users get it with psopenai_dags_folder; set here because the dags folder is a copy.
AIRFLOW_HOME = use_private_airflow_home(DAGS_FOLDER).home

os.environ.update(
    {
        # Wide enough that rich never wraps a task's error message across lines (Airflow 3.0 and 3.1
        # render task errors with rich), so that tests can look for it.
        "COLUMNS": "1000",
    }
)
for name in ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_ORGANIZATION", "AIRFLOW_CONN_PSOPENAI_DEFAULT"):
    os.environ.pop(name, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this process's copy of the dags folder (the plugin removes the private Airflow home)."""
    shutil.rmtree(DAGS_FOLDER, ignore_errors=True)


pytest_plugins = ["airflow_psopenai.testing.pytest_plugin", "tests.fast_tier", "tests.worker_groups"]
# A project as users write one, run by tests/testing/test_user_project.py in a folder of its own.
collect_ignore = ["user_project"]

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
    from collections.abc import AsyncIterator, Callable, Iterator

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.gateway import Gateway

__all__ = ["DagRunResult", "connection_json", "dag_bag_class"]


@pytest.fixture
def emulator(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> OpenAIEmulator:
    """Return a running emulator that the default connection points at."""
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(openai_emulator))
    return openai_emulator


@pytest.fixture(scope="session")
def airflow_db(psopenai_airflow_db: None) -> None:
    """Create the metadata database once per session (the plugin's)."""


@pytest.fixture(scope="session")
def dagbag(psopenai_dagbag: Any) -> Any:
    """Return the DagBag of the test dags folder, failing on any import error (the plugin's)."""
    return psopenai_dagbag


@pytest.fixture
def run_dag(dagbag: Any) -> Callable[..., DagRunResult]:
    """Return a function that runs a DAG of the test dags folder with ``dag.test()``.

    Unlike the plugin's ``run_dag`` it sets no connection: tests choose theirs (``emulator``, or a server of their own).
    """
    return dag_runner(dagbag)


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Return a function that points the default connection at a gateway (tests/gateway.py), with extras."""
    from tests.connections import conn_json, set_connection
    from tests.gateway import GATEWAY_KEY

    def point(gateway: Gateway, **extra: Any) -> None:
        set_connection(monkeypatch, "psopenai_default", conn_json(gateway.api_base, GATEWAY_KEY, **extra))

    return point


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Return caplog, recording from INFO up."""
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scale the exponential backoff from 1 s to 1 ms so that 5xx and transport retries wait milliseconds."""
    from airflow_psopenai.client import retry

    monkeypatch.setattr(retry, "BASE_DELAY_SEC", 0.001)


@pytest.fixture
async def shared_pool() -> AsyncIterator[None]:
    """Close the event loop's shared async clients after an async test."""
    from airflow_psopenai.client.pool import aclose_shared_clients

    yield
    await aclose_shared_clients()


def deadline_context(dag_run_id: int) -> dict[str, Any]:
    """Return the context Airflow gives a deadline's callback (airflow/models/deadline.py ``handle_miss``):
    the REST API's DAG run as a dict, and the deadline."""
    import uuid
    from datetime import UTC, datetime

    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        dag_run = session.get(DagRun, dag_run_id)
        return {
            "dag_run": DAGRunResponse.model_validate(dag_run).model_dump(mode="json"),
            "deadline": {"id": str(uuid.uuid4()), "deadline_time": datetime.now(UTC)},
        }


def run_as_the_triggerer(path: str, kwargs: dict[str, Any], context: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the trigger Airflow's triggerer runs for a deadline's ``AsyncCallback(path, kwargs)``; return its events.

    ``CallbackTrigger`` from Airflow 3.2 on, ``DeadlineCallbackTrigger`` on 3.1 (Airflow 3.0 has no Deadline Alerts).
    """
    import asyncio

    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS

    from airflow_psopenai.client.pool import aclose_shared_clients

    if AIRFLOW_V_3_2_PLUS:
        from airflow.triggers.callback import CallbackTrigger
    else:
        from airflow.triggers.deadline import DeadlineCallbackTrigger as CallbackTrigger

    trigger = CallbackTrigger(callback_path=path, callback_kwargs={**kwargs, "context": context})

    async def events() -> list[dict[str, Any]]:
        try:
            return [event.payload async for event in trigger.run()]
        finally:
            await aclose_shared_clients()

    return asyncio.run(events())


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
