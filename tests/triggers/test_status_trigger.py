"""ResourceStatusTrigger driven directly in an event loop, against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.client import deadline as deadline_module
from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.client.pool import SharedPool, aclose_shared_clients, shared_pool
from airflow_psopenai.exceptions import PSOpenAIWaitTimeoutError
from airflow_psopenai.operators import StopBatchOperator
from airflow_psopenai.sensors import ThreadRunCancelledSensor
from airflow_psopenai.testing import Fault
from airflow_psopenai.triggers import ResourceStatusTrigger
from tests.conftest import connection_json

if TYPE_CHECKING:
    import httpx

    from airflow_psopenai.testing import OpenAIEmulator


def import_string(path: str) -> Any:
    """Import a class by its dotted path, as the triggerer does with ``serialize()``'s first item."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


async def events_of(trigger: ResourceStatusTrigger) -> list[dict[str, Any]]:
    """Run a trigger to its end and return its events' payloads."""
    return [event.payload async for event in trigger.run()]


async def wait_for_gets(emulator: OpenAIEmulator, count: int) -> None:
    """Wait (up to 10 s) until the emulator has answered ``count`` GETs: a trigger is polling."""
    async with asyncio.timeout(10):
        while len(emulator.requests(method="GET")) < count:
            await asyncio.sleep(0.02)


def batch_trigger(batch_id: str, **kwargs: Any) -> ResourceStatusTrigger:
    arguments: dict[str, Any] = {"conn_id": "psopenai_default", "poll_interval": 0.2, **kwargs}
    return ResourceStatusTrigger(resource="batch", ids={"batch_id": batch_id}, **arguments)


def test_serialisation_round_trip() -> None:
    trigger = batch_trigger("batch_1", hook_kwargs={"timeout_sec": 5.0, "max_retry_count": 2}, deadline=1_900_000_000.5)
    path, kwargs = trigger.serialize()
    assert path == "airflow_psopenai.triggers.status.ResourceStatusTrigger"
    rebuilt = import_string(path)(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (path, kwargs)
    assert kwargs == {
        "resource": "batch",
        "ids": {"batch_id": "batch_1"},
        "conn_id": "psopenai_default",
        "hook_kwargs": {"timeout_sec": 5.0, "max_retry_count": 2},
        "poll_interval": 0.2,
        "deadline": 1_900_000_000.5,
        "try_number": None,
        "wait_started": None,
        "deadline_name": "the deadline",
    }


def test_kwargs_built_by_tasks_hold_no_secret(emulator: OpenAIEmulator) -> None:
    operator = StopBatchOperator(
        task_id="stop", batch_id="batch_1", api_base=emulator.api_base, organization="org-1", timeout_sec=3
    )
    sensor = ThreadRunCancelledSensor(task_id="sense", thread_id="thread_1", run_id="run_1")
    for trigger in (
        operator.status_trigger({"batch_id": "batch_1"}, 1.0, Deadline.after(60), 1),
        sensor.status_trigger({"thread_id": "thread_1", "run_id": "run_1"}, 1.0, Deadline(None), 2),
    ):
        _, kwargs = trigger.serialize()
        text = json.dumps(kwargs).lower()
        assert emulator.api_key.lower() not in text
        assert "authorization" not in text
        assert "api-key" not in text
        assert "bearer" not in text


def test_unknown_resource_is_refused() -> None:
    with pytest.raises(ValueError, match="Unknown resource 'job'"):
        ResourceStatusTrigger(resource="job", ids={}, conn_id="psopenai_default")


async def test_waits_through_cancelling_and_yields_one_settled_event(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch(status="cancelling")
    # The first look sees it cancelling however late it comes; the next ones see the batch as it is,
    # settled 0.2 s after it was made.
    emulator.add_fault(Fault.answer(200, json.dumps(batch)), method="GET")
    events = await events_of(batch_trigger(batch["id"]))
    assert len(events) == 1
    assert events[0]["status"] == "settled"
    assert events[0]["object"]["status"] == "cancelled"
    assert events[0]["ids"] == {"batch_id": batch["id"]}
    assert len(emulator.requests(method="GET")) >= 2


async def test_thread_run(emulator: OpenAIEmulator) -> None:
    run = emulator.create_thread_run(status="cancelling")
    trigger = ResourceStatusTrigger(
        resource="thread_run", ids={"thread_id": run["thread_id"], "run_id": run["id"]}, conn_id="psopenai_default"
    )
    (event,) = await events_of(trigger)
    assert event["object"]["status"] == "cancelled"
    assert emulator.journal[0].headers["openai-beta"] == "assistants=v2"


async def test_transient_errors_are_ridden_out(emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str]) -> None:
    emulator.cancel_delay = 0.3
    batch = emulator.create_batch(status="cancelling")
    for fault in (Fault.server_error(502, html=True), Fault.rate_limit(retry_after=1), Fault.drop()):
        emulator.add_fault(fault, method="GET", times=1)
    (event,) = await events_of(batch_trigger(batch["id"]))
    assert event["status"] == "settled"
    gets = emulator.requests(method="GET")
    assert [e.status for e in gets][:3] == [502, 429, None]
    assert gets[2].time - gets[1].time >= 1.0  # the server's retry-after outranks the poll interval
    assert capfd.readouterr().out.count("failed for now, polling again") == 3


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.insufficient_quota(), "out of quota"),
        (Fault.server_error(500, should_retry=False), "server error"),
    ],
)
async def test_permanent_error_ends_the_wait(emulator: OpenAIEmulator, fault: Fault, message: str) -> None:
    batch = emulator.create_batch(status="cancelling")
    emulator.add_fault(fault, method="GET", times=1)
    (event,) = await events_of(batch_trigger(batch["id"]))
    assert event["status"] == "error"
    assert message in event["message"]
    assert len(emulator.journal) == 1


async def test_unknown_id_and_wrong_key_end_the_wait(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    (event,) = await events_of(batch_trigger("batch_missing"))
    assert event["status"] == "error"
    assert "batch 'batch_missing' was not found" in event["message"]

    wrong = connection_json(emulator).replace(emulator.api_key, "sk-wrong-key-123456")
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_WRONG", wrong)
    batch = emulator.create_batch(status="cancelling")
    (event,) = await events_of(batch_trigger(batch["id"], conn_id="psopenai_wrong"))
    assert event["status"] == "error"
    assert "connection 'psopenai_wrong' was refused" in event["message"]
    assert "sk-wrong-key-123456" not in event["message"]


async def test_trigger_started_past_its_deadline_polls_once_then_times_out(emulator: OpenAIEmulator) -> None:
    emulator.cancel_delay = 60  # the default 0.2 s could pass before the one look on a slow machine
    batch = emulator.create_batch(status="cancelling")
    (event,) = await events_of(batch_trigger(batch["id"], deadline=time.time() - 1))
    assert event["status"] == "timeout"
    assert event["message"].endswith("did not settle before the deadline (last status: cancelling).")
    assert event["object"]["status"] == "cancelling"
    assert len(emulator.journal) == 1


async def test_trigger_started_past_its_deadline_reports_an_object_settled_meanwhile(emulator: OpenAIEmulator) -> None:
    """A triggerer down past the deadline: the batch got cancelled meanwhile, which is no timeout."""
    batch = emulator.create_batch(status="cancelled")
    (event,) = await events_of(batch_trigger(batch["id"], deadline=time.time() - 1))
    assert event["status"] == "settled"
    assert event["object"]["status"] == "cancelled"


async def test_deadline_is_absolute_across_a_restart(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The triggerer is down for 9 s: the deadlines' clock is moved on by hand, not slept, so a slow
    # machine cannot eat the margin; the event loop's sleeps keep the real clock.
    downtime = [0.0]
    monkeypatch.setattr(
        deadline_module, "time", SimpleNamespace(time=lambda: time.time() + downtime[0], monotonic=time.monotonic)
    )
    emulator.cancel_delay = 60
    batch = emulator.create_batch(status="cancelling")
    first = batch_trigger(batch["id"], deadline=time.time() + 10)
    task = asyncio.create_task(events_of(first))
    await wait_for_gets(emulator, 1)
    task.cancel()  # the triggerer stops; another one rebuilds the trigger from its kwargs
    path, kwargs = first.serialize()
    downtime[0] = 9.0
    restarted_at = time.monotonic()
    (event,) = await events_of(import_string(path)(**kwargs))
    waited = time.monotonic() - restarted_at
    assert event["status"] == "timeout"
    assert event["object"]["status"] == "cancelling"
    assert waited < 5  # the last second of the original 10 s, not a fresh 10 s


async def test_deadline_bounds_a_hanging_call_without_timeout(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch(status="cancelling")
    emulator.add_fault(Fault.hang(None), method="GET", times=1)
    started = time.monotonic()
    (event,) = await events_of(batch_trigger(batch["id"], deadline=time.time() + 1.0))
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 2.0


async def test_200_triggers_share_one_pool_and_do_not_block_each_other(emulator: OpenAIEmulator) -> None:
    """With 200 ms per request, 200 triggers finish in about one poll interval plus the latency."""
    emulator.cancel_delay = 0.5
    emulator.latency = 0.2
    batch_ids = [str(emulator.create_batch(status="cancelling")["id"]) for _ in range(200)]
    await aclose_shared_clients()
    started = time.monotonic()
    results = await asyncio.gather(*(events_of(batch_trigger(b, poll_interval=1.0)) for b in batch_ids))
    elapsed = time.monotonic() - started
    assert [len(events) for events in results] == [1] * 200
    assert [events[0]["ids"]["batch_id"] for events in results] == batch_ids
    assert {events[0]["object"]["status"] for events in results} == {"cancelled"}
    # Every connection the emulator saw was opened by the loop's one shared pool.
    assert shared_pool().open_connections == len({entry.connection for entry in emulator.journal})
    # Serialised polling would take at least 200 x 0.2 s = 40 s for the first round alone.
    assert elapsed < 1.0 + 0.2 + 2.0, f"took {elapsed:.1f} s"
    await aclose_shared_clients()


async def test_on_kill_stops_the_wait_and_sends_nothing(
    emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Airflow 3.3 does when a user marks the waiting task failed: cancel the run, then call on_kill."""
    # Counted where they are sent: the emulator may journal a request sent before the cancel after it.
    sent: list[str] = []
    send = SharedPool.request

    async def counted(pool: SharedPool, method: str, url: httpx.URL, **kwargs: Any) -> httpx.Response:
        sent.append(f"{method} {url.path}")
        return await send(pool, method, url, **kwargs)

    monkeypatch.setattr(SharedPool, "request", counted)
    emulator.cancel_delay = 60
    batch = emulator.create_batch(status="cancelling")
    trigger = batch_trigger(batch["id"], poll_interval=0.1)
    polling = asyncio.create_task(events_of(trigger))
    await wait_for_gets(emulator, 3)
    polling.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await polling
    sent_before_the_kill = len(sent)
    await trigger.on_kill()
    await asyncio.sleep(0.5)  # polling every 0.1 s would have sent four or five more
    assert sent[sent_before_the_kill:] == []
    assert emulator.requests(method="POST") == []  # the cancel had been sent before the task deferred
    assert "the cancel was already requested, nothing more to do" in capfd.readouterr().out


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        {"status": "done"},
        {"status": "settled"},
        {"status": "settled", "resource": "batch", "object": {"status": "cancelling"}},
        {"status": "settled", "resource": "thread_run", "object": {"status": "cancelled"}},
        {"status": "settled", "resource": "batch", "ids": {"batch_id": "batch_2"}, "object": {"status": "cancelled"}},
        {"status": "timeout"},
        {"status": "error", "message": ["not", "text"]},
    ],
)
def test_resumed_operator_refuses_unknown_events(event: Any) -> None:
    operator = StopBatchOperator(task_id="stop", batch_id="batch_1", wait=True, deferrable=True)
    with pytest.raises(ValueError, match="trigger sent"):
        operator.execute_complete(context={}, event=event)  # type: ignore[arg-type]


class TaskInstanceOfTry:
    def __init__(self, try_number: int) -> None:
        self.try_number = try_number


async def test_the_event_names_the_try_that_deferred(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch(status="cancelled")
    (event,) = await events_of(batch_trigger(batch["id"], try_number=3))
    assert (event["status"], event["try_number"]) == ("settled", 3)


def test_a_task_resumed_with_the_event_of_an_earlier_try_starts_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 3.0 keeps a failed deferred task's next method for its retry: the retry must run execute."""
    operator = StopBatchOperator(task_id="stop", batch_id="batch_1", wait=True, deferrable=True)
    started_over: list[int] = []
    monkeypatch.setattr(operator, "execute", lambda context: started_over.append(context["ti"].try_number))
    stale = {"status": "timeout", "message": "did not settle", "object": None, "try_number": 1}
    operator.execute_complete(context={"ti": TaskInstanceOfTry(2)}, event=stale)  # type: ignore[arg-type]
    assert started_over == [2]
    with pytest.raises(PSOpenAIWaitTimeoutError, match="did not settle"):
        operator.execute_complete(context={"ti": TaskInstanceOfTry(1)}, event=stale)  # type: ignore[arg-type]
