"""The run cleanup of the callbacks (and the listener, which runs it): what it does with a list it cannot read
whole, with a server clock behind this one, with a run cleaned up twice at once, and with odd inputs."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.callbacks import (
    acancel_run_batches,
    acancel_run_work,
    cancel_run_batches,
    cancel_run_batches_with,
    cancel_run_work,
)
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.testing import Fault, ManualClock, OpenAIEmulator
from tests.conftest import connection_json
from tests.connections import conn_json, set_connection, unique_key
from tests.gateway import Gateway, Reply, batch, page

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

TAGS = {"airflow_dag_id": "pipeline", "airflow_run_id": "run-1"}
KEY = unique_key()


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Callable[[Gateway], None]:
    return lambda gateway: set_connection(monkeypatch, "psopenai_default", conn_json(gateway.api_base, KEY))


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scale the backoff between reads of a failed page from 1 s to 1 ms."""
    from airflow_psopenai.client import retry

    monkeypatch.setattr(retry, "BASE_DELAY_SEC", 0.001)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    return caplog


def run_context(run_after: object = None) -> dict[str, Any]:
    if run_after is None:
        run_after = datetime.now(UTC) - timedelta(hours=1)
    return {"dag_run": SimpleNamespace(dag_id="pipeline", run_id="run-1", run_after=run_after)}


def summary_of(logs: pytest.LogCaptureFixture) -> str:
    lines = [record.getMessage() for record in logs.records if "batches tagged with it" in record.getMessage()]
    assert len(lines) == 1, lines
    return lines[0]


def sent_in(summary: str) -> int:
    found = re.search(r"(\d+) cancels sent", summary)
    assert found, summary
    return int(found.group(1))


def first_page_then(later: Callable[[str, int], Reply], items: list[dict[str, Any]]) -> Callable[..., Reply]:
    """Serve ``items`` as the list's first page (more to come); ``later(after, n)`` answers every other page."""
    return lambda after, n: page(items, has_more=True) if after is None else later(after, n)


# -- a list that cannot be read whole -------------------------------------------------------------------------


@pytest.mark.server
def test_a_later_page_that_cannot_be_read_still_cancels_what_was_found(
    connect: Callable[[Gateway], None], logs: pytest.LogCaptureFixture
) -> None:
    mine = [batch(f"batch_{n}", **TAGS) for n in range(3)]
    items = [*mine, *(batch(f"other_{n}") for n in range(97))]
    bad_gateway = Reply({"error": {"message": "Bad gateway."}}, status=502)
    with Gateway(items, lists=first_page_then(lambda _after, _n: bad_gateway, items)) as gateway:
        connect(gateway)
        cancel_run_batches_with(timeout_sec=30)(run_context())  # max_retry_count 0: no retry of the cancels
        assert sorted(gateway.cancelled()) == sorted(item["id"] for item in mine)
        assert len([entry for entry in gateway.requests(kind="list") if entry.query.get("after")]) == 3
    summary = summary_of(logs)
    assert "3 batches tagged with it, 3 running: 3 cancels sent, 0 could not be cancelled." in summary
    assert "Not looked at: the batch list past page 1 (" in summary and "HTTP 502" in summary


@pytest.mark.server
def test_a_page_that_fails_once_is_read_again_whatever_max_retry_count(
    connect: Callable[[Gateway], None], logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    first = [batch(f"batch_{n:03d}", **TAGS) for n in range(100)]
    second = [batch(f"batch_{n:03d}", **TAGS) for n in range(100, 103)]
    failures = itertools.count()

    def later(_after: str, _n: int) -> Reply:
        if next(failures) == 0:
            return Reply({"error": {"message": "Bad gateway."}}, status=502)
        return page(second, has_more=False)

    with Gateway([*first, *second], lists=first_page_then(later, first)) as gateway:
        connect(gateway)
        cancel_run_batches_with(timeout_sec=30)(run_context())
        assert len(gateway.cancelled()) == 103
    assert "103 batches tagged with it, 103 running: 103 cancels sent, 0 could not be cancelled." in summary_of(logs)
    assert "Not looked at" not in logs.text


@pytest.mark.server
def test_a_listing_that_cannot_end_in_time_leaves_the_cancels_their_part_of_the_budget(
    connect: Callable[[Gateway], None], logs: pytest.LogCaptureFixture
) -> None:
    """Newer batches for ever, 50 ms a page: the listing stops at its part of the budget, the cancels go out."""
    mine = [batch(f"batch_{n}", **TAGS) for n in range(3)]
    numbers = itertools.count()

    def fresh(_after: str, _n: int) -> Reply:
        return Reply(page([batch(f"other_{next(numbers)}") for _ in range(100)]).body, delay=0.05)

    with Gateway(mine, lists=first_page_then(fresh, mine)) as gateway:
        connect(gateway)
        cancel_run_batches_with(timeout_sec=3)(run_context())
        assert sorted(gateway.cancelled()) == sorted(item["id"] for item in mine)
    summary = summary_of(logs)
    assert "3 cancels sent, 0 could not be cancelled. Not looked at: the batch list past page" in summary


@pytest.mark.server
def test_a_cleanup_reads_no_further_back_than_a_batch_can_run(
    connect: Callable[[Gateway], None], logs: pytest.LogCaptureFixture
) -> None:
    """A backfill's run of last year: batches older than a day and an hour have ended, and are not read."""
    now = int(time.time())
    mine = [batch(f"batch_{n}", **TAGS) for n in range(3)]
    ended = [batch(f"old_{n:03d}", "completed", created_at=now - 26 * 3600 - n) for n in range(350)]
    with Gateway([*mine, *ended]) as gateway:
        connect(gateway)
        cancel_run_batches_with(timeout_sec=30)(run_context(datetime.now(UTC) - timedelta(days=365)))
        assert sorted(gateway.cancelled()) == sorted(item["id"] for item in mine)
        assert [entry for entry in gateway.requests(kind="list") if entry.query.get("after")] == []  # one page
    assert "Not looked at" not in summary_of(logs)


@pytest.fixture
def emulator_behind(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIEmulator]:
    """An emulator whose clock (the batches' created_at) is 3 s behind this machine's."""
    with OpenAIEmulator(clock=lambda: time.time() - 3) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(emulator))
        yield emulator


@pytest.mark.server
def test_a_server_clock_behind_this_one_hides_no_batch_of_the_run(
    emulator_behind: OpenAIEmulator, logs: pytest.LogCaptureFixture
) -> None:
    run_after = datetime.now(UTC)
    mine = [str(emulator_behind.create_batch(metadata=TAGS)["id"]) for _ in range(3)]
    cancel_run_batches(run_context(run_after))
    cancelled = [entry.path.split("/")[3] for entry in emulator_behind.requests(method="POST", path="*/cancel")]
    assert sorted(cancelled) == sorted(mine)
    assert "3 batches tagged with it, 3 running: 3 cancels sent" in summary_of(logs)


# -- two cleanups of one run at once -------------------------------------------------------------------------


def tagged_batches(emulator: OpenAIEmulator, count: int) -> list[str]:
    return [str(emulator.create_batch(metadata=TAGS)["id"]) for _ in range(count)]


def cancel_posts(emulator: OpenAIEmulator) -> list[str]:
    return [entry.path.split("/")[3] for entry in emulator.requests(method="POST", path="*/cancel")]


def test_two_cleanups_of_one_run_in_one_event_loop_send_one_cancel_per_batch(emulator: OpenAIEmulator) -> None:
    mine = tagged_batches(emulator, 5)
    context = run_context()

    async def both() -> list[str | None]:
        return list(await asyncio.gather(acancel_run_batches(context), acancel_run_batches(context)))

    summaries = asyncio.run(both())
    assert sorted(cancel_posts(emulator)) == sorted(mine)
    assert all(summary is not None for summary in summaries)
    assert sum(sent_in(str(summary)) for summary in summaries) == 5
    assert any("left to another cancel of them under way in this process" in str(summary) for summary in summaries)


def test_two_cleanups_of_one_run_in_threads_send_one_cancel_per_batch(
    emulator: OpenAIEmulator, logs: pytest.LogCaptureFixture
) -> None:
    mine = tagged_batches(emulator, 5)
    emulator.latency = 0.3  # each request takes long enough that both cleanups hold their batches together
    start = threading.Barrier(2)

    def cleanup() -> None:
        start.wait()
        cancel_run_batches(run_context())

    threads = [threading.Thread(target=cleanup) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(cancel_posts(emulator)) == sorted(mine)
    summaries = [record.getMessage() for record in logs.records if "batches tagged with it" in record.getMessage()]
    assert len(summaries) == 2
    assert sum(sent_in(summary) for summary in summaries) == 5


# -- odd inputs ------------------------------------------------------------------------------------------------


def test_a_connection_that_is_none_is_refused_where_the_callback_is_made() -> None:
    with pytest.raises(PSOpenAIConfigurationError, match=r"conn_id must be the name of an Airflow connection"):
        cancel_run_batches_with(conn_id=None)  # type: ignore[arg-type]


def test_a_connection_that_is_none_is_one_clear_line(emulator: OpenAIEmulator, logs: pytest.LogCaptureFixture) -> None:
    tagged_batches(emulator, 1)
    cancel_run_batches(run_context(), conn_id=None)  # type: ignore[arg-type]
    assert "conn_id must be the name of an Airflow connection (text), got None" in logs.text
    assert "AttributeError" not in logs.text
    assert emulator.journal == []


@pytest.mark.parametrize("run_after", ["soon", True, float("nan"), object()])
def test_a_run_after_that_is_no_moment_is_one_clear_line_before_any_request(
    emulator: OpenAIEmulator, logs: pytest.LogCaptureFixture, run_after: object
) -> None:
    dag_run = {"dag_id": "pipeline", "dag_run_id": "run-1", "run_after": run_after}
    assert asyncio.run(acancel_run_batches({"dag_run": dag_run})) is None
    assert "The DAG run's run_after must be a datetime, an ISO 8601 text or epoch seconds" in logs.text
    assert not any(record.exc_info for record in logs.records)
    assert emulator.journal == []


@pytest.mark.server
def test_a_run_after_in_epoch_seconds_is_the_cutoff(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock(start=time.time() - 3 * 3600)
    with OpenAIEmulator(clock=clock) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(emulator))
        tagged_batches(emulator, 1)  # three hours ago, before the run
        clock.advance(2 * 3600)
        mine = tagged_batches(emulator, 2)  # an hour ago
        cancel_run_batches(run_context(run_after=int(time.time() - 2 * 3600)))
        assert sorted(cancel_posts(emulator)) == sorted(mine)


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_run_after_without_a_time_zone_is_utc_as_airflow_takes_it(emulator: OpenAIEmulator, new_york: None) -> None:
    run_after = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=1)
    mine = tagged_batches(emulator, 2)
    cancel_run_batches(run_context(run_after))
    assert sorted(cancel_posts(emulator)) == sorted(mine)


@pytest.mark.server
def test_a_cancel_whose_answer_did_not_arrive_is_not_counted_as_failed(
    connect: Callable[[Gateway], None], logs: pytest.LogCaptureFixture
) -> None:
    """The budget ends while cancels are in flight: the API applied them, their answers never came."""
    items = [batch(f"batch_{n}", **TAGS) for n in range(6)]
    gateway: Gateway

    def applied_then_slow(batch_id: str) -> Reply:
        applied = gateway._cancel(batch_id)
        return Reply(applied.body, delay=30)

    with Gateway(items, cancels=applied_then_slow) as gateway:
        connect(gateway)
        cancel_run_batches_with(timeout_sec=2)(run_context())
        received = len(gateway.cancelled())
    summary = summary_of(logs)
    assert received > 0
    assert f"0 cancels sent, {received} sent whose answer did not arrive (they may have gone through), " in summary
    assert f"{6 - received} could not be cancelled." in summary


def test_the_same_run_reported_failed_twice_to_the_listener_gets_one_cancel_per_batch(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    from airflow_psopenai.plugin import FailedRunListener

    monkeypatch.setenv("AIRFLOW__PSOPENAI__CANCEL_BATCHES_OF_FAILED_RUNS", "True")
    mine = tagged_batches(emulator, 5)
    emulator.latency = 0.3  # both cleanups run at once, in two of the listener's threads
    listener = FailedRunListener()
    try:
        for _ in range(2):
            dag_run = run_context()["dag_run"]
            dag_run.dag = SimpleNamespace(has_on_failure_callback=False)
            listener.on_dag_run_failed(dag_run=dag_run, msg="Dag Run's state was manually set to `failed`.")
        assert listener.join(60)
    finally:
        listener.stop()
    assert sorted(cancel_posts(emulator)) == sorted(mine)
    summaries = [record.getMessage() for record in logs.records if "batches tagged with it" in record.getMessage()]
    assert len(summaries) == 2
    assert sum(sent_in(summary) for summary in summaries) == 5


# -- fine-tuning jobs too: cancel_run_work and acancel_run_work ---------------------------------------------------


def test_the_work_callback_cancels_a_failed_runs_batch_and_fine_tuning_job(
    emulator: OpenAIEmulator, run_dag: Callable[..., Any]
) -> None:
    other = str(
        emulator.create_fine_tuning_job(metadata={"airflow_dag_id": "run_work_cleanup", "airflow_run_id": "x"})["id"]
    )
    result = run_dag("run_work_cleanup")
    assert result.task_states["work"] == "failed"
    (job_post,) = emulator.requests(method="POST", path="/v1/fine_tuning/jobs")
    (batch_post,) = emulator.requests(method="POST", path="/v1/batches")
    cancelled = [entry.path for entry in emulator.requests(method="POST", path="*/cancel")]
    assert len(cancelled) == 2
    assert {path.split("/")[2] for path in cancelled} == {"batches", "fine_tuning"}
    assert emulator.get_fine_tuning_job(other)["status"] == "running"
    # The job list was read filtered by the run's tags on the server: by the create's look, then by the cleanup.
    _, cleanup = emulator.requests(method="GET", path="/v1/fine_tuning/jobs")
    assert cleanup.query["metadata[airflow_dag_id]"] == "run_work_cleanup"
    assert cleanup.query["metadata[airflow_run_id]"] == result.dag_run.run_id
    assert "metadata[airflow_task_id]" not in cleanup.query  # every task's jobs of the run
    assert job_post.status == batch_post.status == 200


def test_the_async_work_callback_cancels_both_kinds_under_one_budget(emulator: OpenAIEmulator) -> None:
    batches = [str(emulator.create_batch(metadata=TAGS)["id"]) for _ in range(2)]
    jobs = [str(emulator.create_fine_tuning_job(status, metadata=TAGS)["id"]) for status in ("queued", "running")]
    done = str(emulator.create_fine_tuning_job("succeeded", metadata=TAGS)["id"])
    emulator.create_fine_tuning_job(metadata={**TAGS, "airflow_run_id": "run-2"})
    summary = asyncio.run(acancel_run_work({**run_context(), "ti": object()}, timeout_sec=30))
    assert summary is not None
    assert "2 batches tagged with it, 2 running: 2 cancels sent, 0 could not be cancelled." in summary
    assert "3 fine-tuning jobs tagged with it, 2 running: 2 cancels sent, 0 could not be cancelled." in summary
    cancelled = sorted(entry.path.split("/")[-2] for entry in emulator.requests(method="POST", path="*/cancel"))
    assert cancelled == sorted(batches + jobs)
    assert emulator.get_fine_tuning_job(done)["status"] == "succeeded"


def test_a_job_list_that_hangs_leaves_the_batches_cancelled_within_the_budget(
    emulator: OpenAIEmulator, logs: pytest.LogCaptureFixture
) -> None:
    mine = str(emulator.create_batch(metadata=TAGS)["id"])
    emulator.create_fine_tuning_job(metadata=TAGS)
    emulator.add_fault(Fault.hang(None), method="GET", path="/v1/fine_tuning/jobs", times=100)
    started = time.monotonic()
    cancel_run_work(run_context(), timeout_sec=3)
    assert time.monotonic() - started < 30  # bounded by its budget (a loose guard, not a speed target)
    assert [entry.path for entry in emulator.requests(method="POST", path="*/cancel")] == [f"/v1/batches/{mine}/cancel"]
    text = logs.text
    assert "1 batch tagged with it, 1 running: 1 cancel sent" in text
    assert "0 fine-tuning jobs tagged with it" in text and "Not looked at: the whole fine-tuning job list" in text


def test_cancel_run_batches_still_leaves_fine_tuning_jobs_alone(emulator: OpenAIEmulator) -> None:
    job = str(emulator.create_fine_tuning_job(metadata=TAGS)["id"])
    emulator.create_batch(metadata=TAGS)
    cancel_run_batches(run_context(), timeout_sec=30)
    assert emulator.get_fine_tuning_job(job)["status"] == "running"
    assert emulator.requests(method="GET", path="/v1/fine_tuning/jobs") == []


# -- another deployment's batches -----------------------------------------------------------------------------


def test_a_failed_staging_run_leaves_productions_batch_of_the_same_run_alone(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, logs: pytest.LogCaptureFixture
) -> None:
    production = str(emulator.create_batch(metadata={**TAGS, "airflow_deployment": "production"})["id"])
    staging = str(emulator.create_batch(metadata={**TAGS, "airflow_deployment": "staging"})["id"])
    untagged = str(emulator.create_batch(metadata=TAGS)["id"])
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "staging")
    cancel_run_batches(run_context())
    assert sorted(cancel_posts(emulator)) == sorted([staging, untagged])
    assert emulator.get_batch(production)["status"] == "in_progress"
    summary = summary_of(logs)
    assert "deployment 'staging'" in summary
    assert "1 of another deployment left alone" in summary
    assert "1 without a deployment tag" in summary


def test_the_work_callback_leaves_another_deployments_fine_tuning_job_of_the_same_run_alone(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    production = str(emulator.create_fine_tuning_job(metadata={**TAGS, "airflow_deployment": "production"})["id"])
    staging = str(emulator.create_fine_tuning_job(metadata={**TAGS, "airflow_deployment": "staging"})["id"])
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "staging")
    summary = asyncio.run(acancel_run_work({**run_context(), "ti": object()}, timeout_sec=30))
    assert summary is not None
    assert "1 fine-tuning job tagged with it, 1 running: 1 cancel sent" in summary
    assert "1 of another deployment left alone" in summary
    assert emulator.get_fine_tuning_job(production)["status"] == "running"
    assert emulator.get_fine_tuning_job(staging)["status"] == "cancelled"
