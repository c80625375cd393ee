"""The status board keeps each wait's deadline: it stops walking the list at it, and polls at it, not before."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow_psopenai.client.pool import aclose_shared_clients
from airflow_psopenai.testing import Fault
from airflow_psopenai.triggers.status import ResourceSetStatusTrigger
from tests.triggers.test_status_trigger import events_of
from tests.waiting.test_coalesced_polling import LIST, list_pages

if TYPE_CHECKING:
    from airflow_psopenai.testing import OpenAIEmulator

PAGE_LATENCY = 0.8


def one_waited_batch_a_page(emulator: OpenAIEmulator, pages: int) -> list[str]:
    """Make ``pages`` cancelling batches, each with 99 newer ``in_progress`` ones: one waited batch a list page."""
    waited = []
    for _ in range(pages):
        waited.append(str(emulator.create_batch(status="cancelling")["id"]))
        for _ in range(99):
            emulator.create_batch(status="in_progress")
    return waited[::-1]  # newest first, as the list shows them


def set_trigger(batch_ids: list[str], deadline: float | None) -> ResourceSetStatusTrigger:
    return ResourceSetStatusTrigger(
        resource="batch",
        id_sets=[{"batch_id": batch_id} for batch_id in batch_ids],
        conn_id="psopenai_default",
        poll_interval=0.5,
        deadline=deadline,
    )


async def timed_events(trigger: ResourceSetStatusTrigger) -> tuple[dict[str, Any], float]:
    """Run a set trigger; return its one event and how long it took."""
    started = time.monotonic()
    (event,) = await events_of(trigger)  # type: ignore[arg-type]
    return event, time.monotonic() - started


async def test_a_slow_list_is_walked_no_further_than_the_sets_deadline(emulator: OpenAIEmulator) -> None:
    """Ten waits, one on each page, 0.8 s a page, a 2 s deadline: pages are asked for at 0, 0.8 and 1.6 s only.

    The seven waits the walk did not reach by then poll once with their own GETs (their poll at the
    deadline) and end with a timeout; walking on would take 8 s.
    """
    emulator.cancel_delay = 60
    batch_ids = one_waited_batch_a_page(emulator, 10)
    emulator.add_fault(Fault.latency(PAGE_LATENCY), method="GET", path=LIST, times=100)

    event, elapsed = await timed_events(set_trigger(batch_ids, deadline=time.time() + 2.0))
    await aclose_shared_clients()

    assert event["results"] == [["timeout", "cancelling"]] * 10  # each one's last status read
    assert len(list_pages(emulator)) <= 3  # a busy machine asks for fewer, never more
    # The deadline, the page asked before it (up to 1 s), the own GETs (fast here): 8.6 s when the walk went on.
    assert elapsed < 2.0 + 2.5, f"took {elapsed:.1f} s"


async def test_waits_past_their_deadline_end_while_the_board_walks_on_for_the_others(
    emulator: OpenAIEmulator,
) -> None:
    """One board, two sets, their batches on alternate pages: the set with a 2 s deadline ends then, the
    set without one goes on to settle (6 s)."""
    emulator.cancel_delay = 6.0
    batch_ids = one_waited_batch_a_page(emulator, 8)
    emulator.add_fault(Fault.latency(PAGE_LATENCY), method="GET", path=LIST, times=200)
    short, long = batch_ids[0::2], batch_ids[1::2]  # interleaved over the pages

    (short_event, short_took), (long_event, _) = await asyncio.gather(
        timed_events(set_trigger(short, deadline=time.time() + 2.0)),
        timed_events(set_trigger(long, deadline=None)),
    )
    await aclose_shared_clients()

    assert [kind for kind, _ in short_event["results"]] == ["timeout"] * 4
    assert short_took < 2.0 + 2.5, f"took {short_took:.1f} s"
    assert long_event["results"] == [["settled", "cancelled"]] * 4


async def test_the_last_round_is_asked_for_at_the_deadline_not_a_page_latency_before(emulator: OpenAIEmulator) -> None:
    """A server that reads the status when a request arrives and answers 0.7 s later.

    Rounds are asked at 0, 0.7 and 1.4 s (each answered 0.7 s later); the next is due at the 5 s
    deadline. Asked one latency early (4.3 s), it sees the batches still cancelling and the wait
    reports a timeout, though they were cancelled at 4.65 s, before the deadline.
    """
    emulator.cancel_delay = 4.65
    batch_ids = [str(emulator.create_batch(status="cancelling")["id"]) for _ in range(3)]
    deadline = time.time() + 5.0
    emulator.add_fault(Fault.hang(0.7, applied=True), method="GET", path=LIST, times=100)
    trigger = ResourceSetStatusTrigger(
        resource="batch",
        id_sets=[{"batch_id": batch_id} for batch_id in batch_ids],
        conn_id="psopenai_default",
        poll_interval=30.0,
        deadline=deadline,
    )

    (event,) = await events_of(trigger)  # type: ignore[arg-type]
    await aclose_shared_clients()

    last_asked = list_pages(emulator)[-1].time
    assert last_asked >= deadline - 0.05, f"the last page was asked {deadline - last_asked:.2f} s before the deadline"
    assert event["results"] == [["settled", "cancelled"]] * 3
