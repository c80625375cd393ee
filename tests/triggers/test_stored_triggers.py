"""What a deferred wait stores in the metadata database: small per batch, and resumable after an upgrade.

The fixtures hold trigger kwargs as earlier code stored them (``serialize()``'s output), one file per
format of the set's kwargs, event and carry (airflow_psopenai.waiting.set_event, cancelling.set_carry):
each trigger is rebuilt from its classpath, as the triggerer does, and run against the emulator to its
event; a set's event then resumes StopBatchesOperator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from airflow.models import crypto
from airflow.providers.common.compat.module_loading import import_string

from airflow_psopenai.cancelling.bulk import CANCEL_SENT, NOTHING_TO_DO, BatchOutcome
from airflow_psopenai.cancelling.set_carry import outcomes_after_a_set_wait, restore_outcome, set_carry
from airflow_psopenai.client.pool import aclose_shared_clients
from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.operators import StopBatchesOperator
from airflow_psopenai.triggers.status import ResourceSetStatusTrigger
from airflow_psopenai.waiting.set_event import MYSQL_TEXT_BYTES, stored_kwargs_size
from scripts.deferred_set_sizes import MEASURING_FERNET_KEY, SIZES, batch_ids, measure, set_event, set_trigger
from tests.triggers.test_status_trigger import TaskInstanceOfTry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_psopenai.testing import OpenAIEmulator

FIXTURES = Path(__file__).parent / "fixtures"
# Kwargs in format 1 (id_sets, whole outcomes in the carry) and format 2 (id_columns, the carry's kinds).
STORED = ["triggers_format_1.json", "triggers_format_2.json"]
# The batches the fixtures name, as each was when the task deferred.
SINGLE = "batch_stored_single"
SET = {"batch_stored_set_1": "cancelling", "batch_stored_set_2": "completed", "batch_stored_set_3": "cancelling"}


def stored(fixture: str, trigger: str) -> tuple[str, dict[str, Any]]:
    entry = json.loads((FIXTURES / fixture).read_text())[trigger]
    return entry["classpath"], entry["kwargs"]


async def run_stored(classpath: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Rebuild a trigger from its stored classpath and kwargs, as the triggerer does; return its one event."""
    trigger = import_string(classpath)(**kwargs)
    events = [event.payload async for event in trigger.run()]
    await aclose_shared_clients()
    assert len(events) == 1
    return events[0]


@pytest.mark.parametrize("fixture", STORED)
async def test_a_single_wait_stored_in_each_format_runs_to_its_event(emulator: OpenAIEmulator, fixture: str) -> None:
    emulator.create_batch(status="cancelling", batch_id=SINGLE)
    classpath, kwargs = stored(fixture, "ResourceStatusTrigger")
    assert classpath == "airflow_psopenai.triggers.status.ResourceStatusTrigger"  # classpaths never move

    event = await run_stored(classpath, kwargs)

    assert (event["status"], event["object"]["status"], event["ids"]) == ("settled", "cancelled", {"batch_id": SINGLE})


@pytest.mark.parametrize("fixture", STORED)
async def test_a_set_stored_in_each_format_runs_and_resumes_the_task(emulator: OpenAIEmulator, fixture: str) -> None:
    for batch_id, status in SET.items():
        emulator.create_batch(status=status, batch_id=batch_id)
    classpath, kwargs = stored(fixture, "ResourceSetStatusTrigger")
    assert classpath == "airflow_psopenai.triggers.status.ResourceSetStatusTrigger"

    event = await run_stored(classpath, kwargs)
    outcomes, events, limit = outcomes_after_a_set_wait(json.loads(json.dumps(event)))

    assert [(o.batch_id, o.found, o.action) for o in outcomes] == [
        ("batch_stored_set_1", "in_progress", CANCEL_SENT),
        ("batch_stored_set_2", "completed", NOTHING_TO_DO),
        ("batch_stored_set_3", "validating", CANCEL_SENT),
    ]
    assert [waited["object"]["status"] for waited in events] == ["cancelled", "cancelled"]
    assert limit == "its wait_timeout of 600 s"
    operator = StopBatchesOperator(task_id="stop", batch_ids=list(SET), wait=True, deferrable=True)
    assert operator.execute_complete(context={"ti": TaskInstanceOfTry(1)}, event=event) is None  # type: ignore[arg-type]


async def test_a_carry_stored_with_other_fields_resumes(emulator: OpenAIEmulator) -> None:
    """Code that adds a field to an outcome (and code from before a field existed): unknown keys are ignored,
    missing ones take their default."""
    for batch_id, status in SET.items():
        emulator.create_batch(status=status, batch_id=batch_id)
    classpath, kwargs = stored("triggers_format_1.json", "ResourceSetStatusTrigger")
    for row in kwargs["carry"]["outcomes"]:
        row["attempts"] = 2  # a field this code does not know
        del row["error"]  # stored before the field existed

    event = await run_stored(classpath, kwargs)
    outcomes, _, _ = outcomes_after_a_set_wait(event)

    assert [o.error for o in outcomes] == [None, None, None]
    assert [o.status for o in outcomes] == ["cancelling", "completed", "cancelling"]
    with pytest.raises(TypeError, match="without a batch_id"):
        restore_outcome({"found": "in_progress"})


async def test_the_written_carry_gives_back_every_outcome_in_selection_order(emulator: OpenAIEmulator) -> None:
    waited = [str(emulator.create_batch(status="cancelling")["id"]) for _ in range(4)]
    done = str(emulator.create_batch(status="completed")["id"])
    outcomes = [
        BatchOutcome(waited[0], "in_progress", CANCEL_SENT, {"status": "cancelling"}),
        BatchOutcome(done, "completed", NOTHING_TO_DO, {"id": done, "status": "completed", "output_file_id": "f"}),
        BatchOutcome("batch_gone", None, "failed", None, "batch 'batch_gone' was not found"),
        *(BatchOutcome(batch_id, "validating", CANCEL_SENT, {"status": "cancelling"}) for batch_id in waited[1:]),
    ]
    for keep_objects in (False, True):
        trigger = ResourceSetStatusTrigger(
            resource="batch",
            id_sets=[{"batch_id": batch_id} for batch_id in waited],
            conn_id="psopenai_default",
            poll_interval=0.2,
            keep_objects=keep_objects,
            carry=set_carry(outcomes, "the deadline", keep_objects=keep_objects),
        )
        classpath, kwargs = trigger.serialize()
        event = await run_stored(classpath, json.loads(json.dumps(kwargs)))
        restored, events, _ = outcomes_after_a_set_wait(event)

        assert [(o.batch_id, o.found, o.action, o.error) for o in restored] == [
            (o.batch_id, o.found, o.action, o.error) for o in outcomes
        ]
        assert restored[1].obj == (outcomes[1].obj if keep_objects else {"status": "completed"})
        assert [waited_event["object"]["status"] for waited_event in events] == ["cancelled"] * 4
        if keep_objects:  # pass_through: the whole final objects
            assert [waited_event["object"]["id"] for waited_event in events] == waited
            assert all("request_counts" in waited_event["object"] for waited_event in events)


@pytest.fixture
def fernet_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Encrypt trigger kwargs as production does (Airflow keeps its Fernet object once made)."""
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", MEASURING_FERNET_KEY)
    forget_fernet(monkeypatch)
    yield
    forget_fernet(monkeypatch)


def forget_fernet(monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(crypto.get_fernet, "cache_clear"):  # Airflow 3.2+
        crypto.get_fernet.cache_clear()
    else:
        monkeypatch.setattr(crypto, "_fernet", None)


@pytest.mark.usefixtures("fernet_key")
def test_a_deferred_set_stores_a_few_dozen_bytes_a_batch() -> None:
    """Kwargs as Airflow stores them (encrypted), event as next_kwargs holds it: a bound per batch, whatever N.

    ``python -m scripts.deferred_set_sizes`` prints the figures themselves (docs/production.md).
    """
    sizes = {count: measure(count) for count in SIZES}

    def per_batch(key: str) -> float:
        return (sizes[1000][key] - sizes[1][key]) / 999

    assert per_batch("kwargs_stored") <= 64  # 200 B to 375 B in format 1
    assert per_batch("event_timeout") <= 80  # 330 B to 440 B in format 1
    assert all(row["kwargs_stored"] <= row["kwargs_bound"] for row in sizes.values())  # the deferral check's bound
    assert sizes[1]["kwargs_stored"] < 800 and sizes[1]["event_timeout"] < 500


def test_each_batch_id_is_stored_once_in_the_kwargs_and_once_in_the_event() -> None:
    ids = batch_ids(50)
    trigger = set_trigger(ids)
    _, kwargs = trigger.serialize()
    events = (set_event(trigger), set_event(trigger, timeout=True))
    for stored_text in (json.dumps(kwargs), *(json.dumps(event) for event in events)):
        assert all(stored_text.count(batch_id) == 1 for batch_id in ids)
        assert stored_text.count("batch_id") == 1


def test_a_set_too_large_for_mysql_is_refused_before_any_request(emulator: OpenAIEmulator) -> None:
    fits, too_many = batch_ids(1000), batch_ids(1200)
    assert stored_kwargs_size(set_trigger(fits).serialize()[1]) <= MYSQL_TEXT_BYTES
    operator = StopBatchesOperator(task_id="stop", batch_ids=too_many, wait=True, deferrable=True, poll_interval=5)

    with pytest.raises(PSOpenAIConfigurationError) as raised:
        operator.execute(context={})  # type: ignore[arg-type]

    assert str(raised.value).startswith("A deferred set of 1200 batches stores ")
    assert "over the 65,535 bytes of MySQL's TEXT column" in str(raised.value)
    assert "split the selection into sets of at most about 10" in str(raised.value)  # 10xx batches
    assert "Nothing was sent." in str(raised.value)
    assert emulator.journal == []
    # Waiting in the worker stores nothing: the same set is accepted there.
    assert StopBatchesOperator(task_id="stop", batch_ids=too_many, wait=True, deferrable=False).deferrable is False
