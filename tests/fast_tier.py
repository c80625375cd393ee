"""The fast tier (``-m unit``, run by ``make check``): tests that need no server, no process and no Airflow database.

A test belongs to it unless it asks for a fixture that starts something (``SERVER_FIXTURES``), is
marked ``e2e``, ``cluster`` or ``server``, or is listed in ``SERVER_TESTS``. The rule is
applied at collection, so a new test lands in the right tier by what it asks for; a test that is
put in the fast tier wrongly fails, in every run, when it connects or listens on a socket or
queries the Airflow database, and says how to move it out. (Starting a process is not refused: a
first import may run one, e.g. ``platform.architecture()`` runs ``file``; a process a test talks
to needs a socket.)
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

# Fixtures that start an HTTP server or a process, or use the Airflow metadata database; a fixture whose
# name ends in one of SERVER_FIXTURE_ENDINGS (``secret_emulator``, ``proxy``) counts too.
SERVER_FIXTURES = frozenset({"api", "run_dag", "dagbag", "airflow_db", "airflow_stack", "cli"})
SERVER_FIXTURE_ENDINGS = ("emulator", "server", "proxy")
# Tests (a file, a class or a test, by node ID) that start a server or a process themselves.
SERVER_TESTS = (
    "tests/examples/test_demo.py",
    "tests/testing/test_emulator_cli.py",
    "tests/testing/test_emulator_http.py::TestLifeCycle",
    "tests/testing/test_emulator_plugin.py::test_users_enable_the_fixture_with_pytest_plugins",
    "tests/hooks/test_client.py::test_test_connection_returns_false_for_an_unreachable_server",
    "tests/hooks/test_client.py::test_test_connection_names_the_unreachable_server",
    "tests/client/test_errors.py::test_a_key_echoed_in_any_form_is_redacted",
)
NOT_UNIT_MARKERS = ("e2e", "cluster", "server")

_current_unit_test: list[str] = []


def is_unit(item: pytest.Item) -> bool:
    """Return whether ``item`` belongs to the fast tier."""
    if any(item.get_closest_marker(name) is not None for name in NOT_UNIT_MARKERS):
        return False
    if any(item.nodeid == test or item.nodeid.startswith((f"{test}::", f"{test}[")) for test in SERVER_TESTS):
        return False
    fixtures = getattr(item, "fixturenames", ())
    return not any(name in SERVER_FIXTURES or name.endswith(SERVER_FIXTURE_ENDINGS) for name in fixtures)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the tier markers and refuse database queries made by a fast-tier test."""
    config.addinivalue_line("markers", "unit: fast tier, no server, process or Airflow database (make check)")
    config.addinivalue_line(
        "markers", "server: starts a server or a process itself (keeps a test out of the fast tier)"
    )
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "before_cursor_execute", _refuse_database)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the fast tier's tests ``unit`` before ``-m`` selects."""
    for item in items:
        if is_unit(item):
            item.add_marker(pytest.mark.unit)


def _refusal(what: str, nodeid: str) -> AssertionError:
    return AssertionError(
        f"{nodeid} is in the fast tier (make check), which allows no {what}: "
        "ask for the fixture that provides it (emulator, airflow_db, run_dag, ...), "
        "or mark the test @pytest.mark.server."
    )


def _refuse_database(*_args: Any, **_kwargs: Any) -> None:
    if _current_unit_test:
        raise _refusal("Airflow database query", _current_unit_test[0])


def _refuse(what: str, nodeid: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise _refusal(what, nodeid)

    return refuse


@pytest.fixture(autouse=True)
def _fast_tier_stays_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a fast-tier test that connects or listens on a socket or queries the database."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    nodeid = request.node.nodeid
    monkeypatch.setattr(socket.socket, "connect", _refuse("socket connection", nodeid))
    monkeypatch.setattr(socket.socket, "connect_ex", _refuse("socket connection", nodeid))
    monkeypatch.setattr(socket.socket, "bind", _refuse("listening socket", nodeid))
    _current_unit_test.append(nodeid)
    try:
        yield
    finally:
        _current_unit_test.clear()
