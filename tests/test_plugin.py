"""The failed-run listener (plugin.py) against a small server that misbehaves: it runs four cleanups at once,
queues the rest and drops none, bounds each by ``[psopenai] cleanup_timeout_sec``, and stops with the process.

Time is asserted only as an upper bound far above the budget (a loaded machine makes calls slower, never
faster); the buggy behaviour these tests guard against took many times longer, or never ended.
"""

from __future__ import annotations

import itertools
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from tests.gateway import HANG, SLACK_SEC, TAGS, Gateway, Reply, batch, page, run_context, tagged

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# Each test talks to a misbehaving gateway it starts on 127.0.0.1.
pytestmark = [pytest.mark.timeout(60), pytest.mark.server]


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from airflow_psopenai.plugin import FailedRunListener

    monkeypatch.setenv("AIRFLOW__PSOPENAI__CANCEL_BATCHES_OF_FAILED_RUNS", "True")
    made = FailedRunListener()
    yield made
    made.stop()


def fail_run(listener: Any, run_id: str) -> None:
    dag_run = run_context(run_id)["dag_run"]
    dag_run.dag = SimpleNamespace(has_on_failure_callback=False)
    listener.on_dag_run_failed(dag_run=dag_run, msg="Dag Run's state was manually set to `failed`.")


def test_the_listener_runs_four_cleanups_at_once_queues_the_rest_and_drops_none(
    connect: Callable[..., None], monkeypatch: pytest.MonkeyPatch, listener: Any
) -> None:
    in_flight, most = [0], [0]
    lock = threading.Lock()
    runs = [f"run-{n}" for n in range(10)]
    items = [batch(f"batch_{n}", airflow_dag_id="pipeline", airflow_run_id=run) for n, run in enumerate(runs)]

    def counted(_after: str | None, _n: int) -> Reply:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.3)  # long enough that cleanups started together overlap
        with lock:
            in_flight[0] -= 1
        return page(items, has_more=False)

    monkeypatch.setenv("AIRFLOW__PSOPENAI__CLEANUP_TIMEOUT_SEC", "30")
    with Gateway(items, lists=counted) as gateway:
        connect(gateway)
        for run in runs:
            fail_run(listener, run)
        waited = time.monotonic()
        while len(gateway.cancelled()) < len(items) and time.monotonic() - waited < 60:
            time.sleep(0.05)
        assert sorted(gateway.cancelled()) == sorted(item["id"] for item in items)  # none dropped
        assert len(gateway.requests(kind="list")) == 10
        assert 1 <= most[0] <= 4


@pytest.mark.parametrize("value", ["abc", "nan", "0", "-5", "inf"])
def test_a_bad_cleanup_timeout_is_logged_and_the_default_used(
    monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture, value: str
) -> None:
    from airflow_psopenai.plugin import TIMEOUT_SEC, _cleanup_timeout

    monkeypatch.setenv("AIRFLOW__PSOPENAI__CLEANUP_TIMEOUT_SEC", value)
    assert _cleanup_timeout() == TIMEOUT_SEC
    assert "[psopenai] cleanup_timeout_sec must be a number of seconds above 0" in logs.text


def test_each_cleanup_of_the_listener_is_bounded_by_cleanup_timeout_sec(
    connect: Callable[..., None], monkeypatch: pytest.MonkeyPatch, listener: Any
) -> None:
    monkeypatch.setenv("AIRFLOW__PSOPENAI__CLEANUP_TIMEOUT_SEC", "1")
    with Gateway(tagged(1), lists=lambda _after, _n: HANG) as gateway:
        connect(gateway, max_retry_count=5)
        started = time.monotonic()
        for n in range(4):
            fail_run(listener, f"run-{n}")
        assert listener.join(1 + SLACK_SEC)
        assert time.monotonic() - started < 1 + SLACK_SEC
        assert len(gateway.requests(kind="list")) <= 8


def test_the_listener_stops_its_work_when_the_process_shuts_down(
    connect: Callable[..., None], monkeypatch: pytest.MonkeyPatch, listener: Any, logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__PSOPENAI__CLEANUP_TIMEOUT_SEC", "60")
    numbers = itertools.count()
    first = threading.Event()

    def fresh_pages(_after: str | None, _n: int) -> Reply:
        first.set()
        return Reply(page([batch(f"batch_{next(numbers)}", **TAGS)]).body, delay=0.2)

    with Gateway(lists=fresh_pages) as gateway:
        connect(gateway)
        for n in range(8):
            fail_run(listener, f"run-{n}")
        assert first.wait(10)
        listener.before_stopping(component=None)
        assert listener.join(SLACK_SEC)
        stopped_at = len(gateway.requests(kind="list"))
        time.sleep(0.5)
        assert len(gateway.requests(kind="list")) == stopped_at
        assert len({entry.query.get("after") for entry in gateway.requests(kind="list")}) < 40
    dropped = logs.text.count("Shutting down: the batches of DAG run")
    started = logs.text.count("failed: cancelling its batches")
    assert dropped >= 4 and dropped + started == 8  # at most four ran; each queued one is said to be dropped

    # A process that goes on after telling listeners it stops (dag.test, at the end of each task) still cleans up.
    items = tagged(2)
    with Gateway(items) as gateway:
        connect(gateway)
        fail_run(listener, "run-1")
        assert listener.join(30)
        assert sorted(gateway.cancelled()) == sorted(item["id"] for item in items)


def test_loading_the_plugin_warns_when_nothing_names_the_deployment(
    listener: Any, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    from airflow_psopenai.plugin import PSOpenAIPlugin

    monkeypatch.delenv("AIRFLOW__PSOPENAI__DEPLOYMENT", raising=False)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "")
    PSOpenAIPlugin.on_load()
    assert "set [psopenai] deployment" in logs.text
    logs.clear()
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "production")
    PSOpenAIPlugin.on_load()
    assert "deployment" not in logs.text
