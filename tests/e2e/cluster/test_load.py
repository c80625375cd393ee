"""Many waits at once on the production topology: they spread over both triggerers and each ends right."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest

from tests.e2e.cluster.cluster_stack import TRIGGERER_CAPACITY
from tests.e2e.stack import wait_until

if TYPE_CHECKING:
    from tests.e2e.cluster.cluster_stack import ClusterStack

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

DAG_ID = "cluster_psopenai_load"
STOPS = 100
SENSORS = 20
# From the trigger to the last of the 122 tasks ending: about 250 task starts (each wait runs twice in
# the worker: to cancel and defer, then to resume) on two cores; measured about 3 minutes.
LOAD_BOUND_SEC = 420
# Cancels settle this long after they are sent: every wait is deferred before the first one settles (the
# last deferral came 50 s after the first cancel, measured).
CANCEL_DELAY_SEC = 100


def test_a_hundred_deferred_waits_and_twenty_sensors_spread_over_both_triggerers(cluster: ClusterStack) -> None:
    stack = cluster
    stack.emulator_settings(cancel_delay=CANCEL_DELAY_SEC)
    batches = [str(stack.create_batch()["id"]) for _ in range(STOPS)]
    sensed = batches[:SENSORS]
    started = time.time()
    run_id = stack.trigger(DAG_ID, {"stop_batch_ids": batches, "sensed_batch_ids": sensed})

    # While they wait: every one of the 120 deferred at once, held by the two triggerers, neither of
    # which can hold them all (capacity TRIGGERER_CAPACITY each).
    def all_deferred() -> dict[str, int | None] | None:
        held = stack.triggerer_of_tasks(DAG_ID, run_id)
        return held if len(held) == STOPS + SENSORS and None not in held.values() else None

    held = wait_until(all_deferred, CANCEL_DELAY_SEC, "all 120 waits to be deferred and assigned")
    per_triggerer = Counter(held.values())
    assert set(per_triggerer) == stack.running_triggerer_jobs(), per_triggerer
    assert len(per_triggerer) == 2 and max(per_triggerer.values()) <= TRIGGERER_CAPACITY, per_triggerer

    result = stack.wait_runs([(DAG_ID, run_id)], timeout=LOAD_BOUND_SEC, interval=3)[DAG_ID, run_id]
    took = time.time() - started
    assert result.state == "success", Counter(result.states.values())
    assert set(result.states.values()) == {"success"}
    assert len(result.states) == STOPS + SENSORS + 2
    assert took < LOAD_BOUND_SEC

    # Exactly one cancel per batch (the sensors send none), every batch cancelled, and each wait passed
    # its own settled batch on.
    cancels = Counter(entry["path"].split("/")[3] for entry in stack.journal("POST", "/v1/batches/*/cancel"))
    assert {batch_id: cancels[batch_id] for batch_id in batches} == dict.fromkeys(batches, 1)
    for index, batch_id in enumerate(batches):
        assert stack.batch(batch_id)["status"] == "cancelled"
        settled = stack.xcom(DAG_ID, run_id, "stop_and_wait", map_index=index)
        assert settled["id"] == batch_id and settled["status"] == "cancelled"
    for index, batch_id in enumerate(sensed):
        assert stack.xcom(DAG_ID, run_id, "sensor", map_index=index)["id"] == batch_id
