"""One production-shaped Airflow (tests/e2e/cluster/cluster_stack.py) for every cluster test.

Started once for the package, torn down after its last test with the same checks as tests/e2e's
stack: every process stopped, every file removed. When a test failed, the process and task logs are
kept in ``.e2e-cluster-logs/`` (the failure report shows their ends too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.cluster.cluster_stack import ClusterStack
from tests.e2e.stack import REPO, running

if TYPE_CHECKING:
    from collections.abc import Iterator

FAILED_LOGS = REPO / ".e2e-cluster-logs"
CLUSTER_DAG_IDS = {
    "cluster_psopenai_load",
    "cluster_psopenai_failover",
    "cluster_psopenai_worker_kill",
    "e2e_psopenai_cleanup_last_try",
    "e2e_psopenai_cleanup_marked",
    "stop_batches_wait_deferrable",
    "example_psopenai_cancel_on_failure",
}


@pytest.fixture(scope="package")
def cluster() -> Iterator[ClusterStack]:
    """Yield the running cluster; the emulator's cancels settle after 3 s unless a test says otherwise."""
    with running(ClusterStack(), 3.0, CLUSTER_DAG_IDS, failed_logs=FAILED_LOGS) as stack:
        yield stack
