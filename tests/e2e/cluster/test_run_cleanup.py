"""No batch outlives its run on the production topology: the failure callback, the listener, StopBatchesOperator.

The DAGs and checks are tests/e2e's (test_run_cleanup.py) and the unit tests' (tests/dags): here the
callback runs in the DAG processor on PostgreSQL, the listener in the API server, and the bulk
operator's set wait in one of two triggerers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.checks import check_cleanup_after_a_last_try_failed, check_cleanup_after_the_run_is_marked_failed

if TYPE_CHECKING:
    from tests.e2e.cluster.cluster_stack import ClusterStack

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

SET_SIZE = 6


def test_the_failure_callback_cancels_the_batches_of_a_run_whose_last_try_failed(cluster: ClusterStack) -> None:
    cluster.emulator_settings(cancel_delay=3)
    check_cleanup_after_a_last_try_failed(cluster)


def test_the_listener_cancels_the_batches_of_a_run_marked_failed(cluster: ClusterStack) -> None:
    cluster.emulator_settings(cancel_delay=3)
    check_cleanup_after_the_run_is_marked_failed(cluster)


def test_stop_batches_operator_cancels_a_set_and_waits_for_it_in_a_triggerer(cluster: ClusterStack) -> None:
    stack, dag_id = cluster, "stop_batches_wait_deferrable"
    stack.emulator_settings(cancel_delay=10)
    ids = [str(stack.create_batch()["id"]) for _ in range(SET_SIZE)]
    run_id = stack.trigger(dag_id, {"batch_ids": ids})
    result = stack.wait_run(dag_id, run_id, timeout=180)
    assert result.state == "success", result.states
    # One trigger for the whole set, held by one of the two triggerers.
    assert "deferred" in result.seen("stop"), result.samples["stop"]
    trigger_logs = [path.name for path in stack.task_log_files(dag_id, run_id, "stop") if ".trigger." in path.name]
    assert len(trigger_logs) == 1, trigger_logs
    assert "ResourceSetStatusTrigger" in stack.task_log(dag_id, run_id, "stop", trigger=True)
    settled = stack.xcom(dag_id, run_id, "stop")
    assert [batch["id"] for batch in settled] == ids
    assert [batch["status"] for batch in settled] == ["cancelled"] * SET_SIZE
    for batch_id in ids:
        assert len(stack.batch_cancels(batch_id)) == 1, batch_id
