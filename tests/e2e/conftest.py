"""One real Airflow for all end-to-end tests, and the logs a failing test reports.

``airflow_stack`` starts the OpenAI emulator, then ``airflow db migrate``, the API server, the
scheduler (LocalExecutor on SQLite), the DAG processor and the triggerer, in a temporary
AIRFLOW_HOME. It is started once, and scoped to this package rather than to the whole session: with
``make e2e`` that is the same thing, and under ``make test`` Airflow is stopped as soon as the last
end-to-end test is done instead of loading the two cores during the rest of the unit tests. The
teardown stops every process, removes every file, and checks that nothing is left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.stack import E2E_DAGS, AirflowStack

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

# The emulator's default: cancels settle after 3 s. Tests that need other delays set their own.
DEFAULT_CANCEL_DELAY = 3.0
E2E_DAG_IDS = {
    "e2e_psopenai_deferred",
    "e2e_psopenai_restart",
    "e2e_psopenai_mark_failed",
    "e2e_psopenai_cleanup_last_try",
    "e2e_psopenai_cleanup_timeout",
    "e2e_psopenai_cleanup_marked",
}

_stacks: list[AirflowStack] = []


@pytest.fixture(scope="package")
def airflow_stack() -> Iterator[AirflowStack]:
    """Yield a running Airflow whose ``psopenai_default`` connection points at a running emulator."""
    stack = AirflowStack()
    _stacks.append(stack)
    try:
        stack.start(emulator_cancel_delay=DEFAULT_CANCEL_DELAY)
        stack.wait_for_dags(E2E_DAG_IDS, {path.name for path in E2E_DAGS.glob("*.py")})
        yield stack
    finally:
        leftovers = stack.stop()
        stack.remove_files()
        _stacks.remove(stack)
        # The final check: nothing the suite started outlives it, and no file stays behind.
        assert not leftovers, f"processes of the e2e suite still running after the teardown: {leftovers}"
        assert not stack.root.exists(), f"{stack.root} was not removed"
        assert not stack.listening(), f"something still listens on the API server's port {stack.api_port}"


@pytest.fixture(autouse=True)
def _reset_triggered() -> None:
    """Forget the runs of earlier tests, so a failure report shows only this test's task logs."""
    for stack in _stacks:
        stack.triggered.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Attach the process logs and this test's task logs to the report of a failed e2e test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _stacks:
        stack = _stacks[0]
        report.sections.append(("airflow logs", stack.logs_report(list(stack.triggered))))
