"""Batch waits of one event loop read their batches from shared list pages (waiting/status_board.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.client.pool import aclose_shared_clients
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import Fault
from airflow_psopenai.triggers import ResourceStatusTrigger
from tests.conftest import connection_json
from tests.triggers.test_status_trigger import events_of

if TYPE_CHECKING:
    from airflow_psopenai.testing import JournalEntry, OpenAIEmulator

LIST = "/v1/batches"
ONE_BATCH = "/v1/batches/*"


def wait_on(batch_id: str, conn_id: str = "psopenai_default", **kwargs: Any) -> ResourceStatusTrigger:
    arguments: dict[str, Any] = {"poll_interval": 0.5, **kwargs}
    return ResourceStatusTrigger(resource="batch", ids={"batch_id": batch_id}, conn_id=conn_id, **arguments)


async def wait_all(batch_ids: list[str], **kwargs: Any) -> list[dict[str, Any]]:
    """Run one trigger per batch in this event loop; return each one's single event."""
    results = await asyncio.gather(*(events_of(wait_on(batch_id, **kwargs)) for batch_id in batch_ids))
    assert [len(events) for events in results] == [1] * len(batch_ids)
    await aclose_shared_clients()
    return [events[0] for events in results]


def list_pages(emulator: OpenAIEmulator) -> list[JournalEntry]:
    return emulator.requests(method="GET", path=LIST)


def own_gets(emulator: OpenAIEmulator) -> list[JournalEntry]:
    return emulator.requests(method="GET", path=ONE_BATCH)


def cancelling_batches(emulator: OpenAIEmulator, count: int) -> list[str]:
    return [str(emulator.create_batch(status="cancelling")["id"]) for _ in range(count)]


async def test_250_waits_read_a_few_pages_a_round_and_get_what_a_retrieve_returns(emulator: OpenAIEmulator) -> None:
    emulator.cancel_delay = 1.2
    batch_ids = cancelling_batches(emulator, 250)
    events = await wait_all(batch_ids)

    assert [event["status"] for event in events] == ["settled"] * 250
    assert [event["ids"]["batch_id"] for event in events] == batch_ids
    assert own_gets(emulator) == []
    pages = list_pages(emulator)
    rounds = [page for page in pages if "after" not in page.query]
    # The first round walks from the head (3 pages); later ones read the remembered pages at once.
    assert 3 <= len(rounds) <= 8
    assert len(pages) <= 3 * len(rounds)
    assert all(page.query["limit"] == "100" for page in pages)
    # A list item is the object a retrieve returns.
    retrieved = await PSOpenAIHook().aget_batch(batch_ids[0])
    await aclose_shared_clients()
    assert set(events[0]["object"]) == set(retrieved)
    assert events[0]["object"]["status"] == retrieved["status"] == "cancelled"


async def test_one_or_two_waits_poll_with_their_own_gets(emulator: OpenAIEmulator) -> None:
    events = await wait_all(cancelling_batches(emulator, 2))
    assert {event["object"]["status"] for event in events} == {"cancelled"}
    assert list_pages(emulator) == []
    assert len(own_gets(emulator)) >= 2


async def test_waits_started_at_different_times_fall_into_step(emulator: OpenAIEmulator) -> None:
    """A wait is answered early by a round that runs anyway, so a group started half an interval later joins in.

    Group A polls at 0, 0.25, 0.5 s then every 2 s; group B starts at 1 s. In step, one list round
    every 2 s from 1.75 s: 3.75 and 5.75 s after 2 s (the batches settle at 4.5 s). Out of step, A's
    rounds (2.5, 4.5 s) come on top.
    """
    emulator.cancel_delay = 4.5
    group_a, group_b = cancelling_batches(emulator, 5), cancelling_batches(emulator, 5)
    started = time.time()

    async def later(batch_id: str) -> list[dict[str, Any]]:
        await asyncio.sleep(1.0)
        return await events_of(wait_on(batch_id, poll_interval=2.0))

    results = await asyncio.gather(
        *(events_of(wait_on(batch_id, poll_interval=2.0)) for batch_id in group_a),
        *(later(batch_id) for batch_id in group_b),
    )
    await aclose_shared_clients()
    assert {events[0]["object"]["status"] for events in results} == {"cancelled"}
    rounds = [page.time - started for page in list_pages(emulator) if page.time >= started + 2.0]
    assert len(rounds) <= 3, rounds
    assert own_gets(emulator) == []


async def test_each_page_keeps_its_own_phase_so_a_round_is_no_burst(emulator: OpenAIEmulator) -> None:
    """The first round walks three pages one after the other (0.3 s latency each); later rounds read each
    page one poll_interval after its own last read, not all three at once when the first is due.

    Bunched, a triggerer parses every page of a round at the same moment: at N = 10,000 the last of 100
    pages waits half a second behind the others, which is half a second more detection delay.
    """
    emulator.cancel_delay = 4.0
    emulator.latency = 0.3
    batch_ids = cancelling_batches(emulator, 250)
    await wait_all(batch_ids, poll_interval=1.5)
    reads: dict[str, list[float]] = {}
    for page in list_pages(emulator):
        reads.setdefault(page.query.get("after", ""), []).append(page.time)
    assert len(reads) == 3, reads
    later_rounds = list(zip(*(times[1:] for times in reads.values()), strict=False))
    assert later_rounds, reads
    # The times are when the emulator read each request: the bounds leave room for a busy machine's
    # delays on either side of a read (about half the 0.3 s spacing, and 0.3 s on a 1.5 s interval).
    for pages_of_a_round in later_rounds:  # the pages of a round stay as far apart as the first walk made them
        first, *others = sorted(pages_of_a_round)
        assert all(later - first >= 0.15 for later in others), reads
    for times in reads.values():  # and each page is read once a poll_interval (the first polls come sooner)
        gaps = [after - before for before, after in itertools.pairwise(times)]
        assert all(gap <= 1.5 + 0.6 for gap in gaps), reads
        assert gaps[-1] >= 1.5 - 0.3, reads


async def test_old_batches_cost_no_more_than_their_own_gets(emulator: OpenAIEmulator) -> None:
    """300 newer batches in between: one page shows the list does not reach them, then GETs as without a board."""
    emulator.cancel_delay = 2.0
    waited = cancelling_batches(emulator, 5)
    for _ in range(300):
        emulator.create_batch(status="in_progress")
    events = await wait_all(waited)
    assert {event["object"]["status"] for event in events} == {"cancelled"}
    assert len(list_pages(emulator)) == 1
    polls_per_wait = len(own_gets(emulator)) / 5
    assert polls_per_wait >= 3  # 0.25 s, 0.5 s, then every 0.5 s until 2 s


@pytest.mark.parametrize("status", [404, 405, 403])
async def test_a_gateway_without_the_list_turns_the_board_off_once(
    emulator: OpenAIEmulator, status: int, capfd: pytest.CaptureFixture[str]
) -> None:
    emulator.cancel_delay = 1.0
    refusal = Fault.answer(status, '{"error": {"message": "no such route"}}')
    emulator.add_fault(refusal, method="GET", path=LIST, times=50)
    events = await wait_all(cancelling_batches(emulator, 5))
    assert {event["object"]["status"] for event in events} == {"cancelled"}
    assert len(list_pages(emulator)) == 1
    assert capfd.readouterr().out.count("Polling batches one by one from now on") == 1


async def test_a_failing_list_is_each_waits_transient_error_and_the_board_goes_on(
    emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str]
) -> None:
    emulator.cancel_delay = 1.0
    emulator.add_fault(Fault.server_error(503), method="GET", path=LIST, times=1)
    events = await wait_all(cancelling_batches(emulator, 5))
    assert {event["object"]["status"] for event in events} == {"cancelled"}
    out = capfd.readouterr().out
    assert out.count("failed for now, polling again") == 5  # each wait backs off, as after a failed GET
    assert [page.status for page in list_pages(emulator)][:2] == [503, 200]
    assert own_gets(emulator) == []


async def test_a_list_refused_otherwise_sends_the_waits_to_their_own_gets_for_that_round(
    emulator: OpenAIEmulator,
) -> None:
    emulator.cancel_delay = 1.0
    emulator.add_fault(Fault.answer(400, '{"error": {"message": "bad limit"}}'), method="GET", path=LIST, times=1)
    events = await wait_all(cancelling_batches(emulator, 5))
    assert {event["object"]["status"] for event in events} == {"cancelled"}
    assert len(own_gets(emulator)) == 5  # the first round only
    assert list_pages(emulator)[0].status == 400
    assert len(list_pages(emulator)) >= 2  # the board stays on


async def test_a_permanent_error_still_ends_each_wait(emulator: OpenAIEmulator) -> None:
    """Unknown IDs are on no page: their own GETs answer 404, which ends their waits."""
    events = await wait_all(["batch_missing_1", "batch_missing_2", "batch_missing_3"])
    assert [event["status"] for event in events] == ["error"] * 3
    assert all("batch_missing" in event["message"] for event in events)


async def test_two_connections_never_share_a_board(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused key's waits end with its error; the other connection's waits are not touched by it."""
    wrong_key = {"conn_type": "psopenai", "host": emulator.api_base, "password": "sk-wrong-key-" + "9" * 20}
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_WRONG", json.dumps(wrong_key))
    emulator.cancel_delay = 0.8
    right, wrong = cancelling_batches(emulator, 3), cancelling_batches(emulator, 3)
    results = await asyncio.gather(
        *(events_of(wait_on(batch_id)) for batch_id in right),
        *(events_of(wait_on(batch_id, conn_id="psopenai_wrong")) for batch_id in wrong),
    )
    await aclose_shared_clients()
    statuses = [events[0]["status"] for events in results]
    assert statuses == ["settled"] * 3 + ["error"] * 3
    assert all("'psopenai_wrong' was refused" in events[0]["message"] for events in results[3:])
    refused = [page for page in list_pages(emulator) if page.status == 401]
    assert len(refused) == 1  # the wrong key's own board, on its first round


async def test_the_connection_extra_switches_coalescing_off(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(emulator, coalesce_polling="false"))
    events = await wait_all(cancelling_batches(emulator, 5))
    assert {event["object"]["status"] for event in events} == {"cancelled"}
    assert list_pages(emulator) == []


async def test_a_hanging_list_holds_no_wait_past_its_deadline(emulator: OpenAIEmulator) -> None:
    emulator.cancel_delay = 60
    emulator.add_fault(Fault.hang(None), method="GET", path=LIST, times=50)
    batch_ids = cancelling_batches(emulator, 5)
    started = time.monotonic()
    events = await wait_all(batch_ids, deadline=time.time() + 1.5)
    assert [event["status"] for event in events] == ["timeout"] * 5
    assert time.monotonic() - started < 1.5 + 1.5


async def test_thread_runs_keep_their_own_gets(emulator: OpenAIEmulator) -> None:
    runs = [emulator.create_thread_run(status="cancelling") for _ in range(4)]
    results = await asyncio.gather(
        *(
            events_of(
                ResourceStatusTrigger(
                    resource="thread_run",
                    ids={"thread_id": str(run["thread_id"]), "run_id": str(run["id"])},
                    conn_id="psopenai_default",
                    poll_interval=0.3,
                )
            )
            for run in runs
        )
    )
    await aclose_shared_clients()
    assert {events[0]["status"] for events in results} == {"settled"}
    assert list_pages(emulator) == []
