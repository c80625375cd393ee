"""One real Airflow for all end-to-end tests, and the logs a failing test reports.

``airflow_stack`` starts the OpenAI emulator, then ``airflow db migrate``, the API server, the
scheduler (LocalExecutor on SQLite), the DAG processor and the triggerer, in a temporary
AIRFLOW_HOME. It is started once, and scoped to this package rather than to the whole session: with
``make e2e`` that is the same thing, and under ``make test`` Airflow is stopped as soon as the last
end-to-end test is done instead of loading the two cores during the rest of the unit tests. The
teardown stops every process, removes every file, and checks that nothing is left. The hooks below
serve tests/e2e/cluster/ too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.stack import RUNNING_STACKS, AirflowStack, running

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
    "e2e_psopenai_late_run",
    "e2e_psopenai_sweep",
}


@pytest.fixture(scope="package")
def airflow_stack() -> Iterator[AirflowStack]:
    """Yield a running Airflow whose ``psopenai_default`` connection points at a running emulator."""
    with running(AirflowStack(), DEFAULT_CANCEL_DELAY, E2E_DAG_IDS) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _reset_triggered() -> None:
    """Forget the runs of earlier tests, so a failure report shows only this test's task logs."""
    for stack in RUNNING_STACKS:
        stack.triggered.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Attach the process logs and this test's task logs to the report of a failed e2e test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for stack in RUNNING_STACKS:
            stack.failed_tests += 1
            report.sections.append(("airflow logs", stack.logs_report(list(stack.triggered))))
