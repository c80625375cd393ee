"""The status board (waiting/status_board.py) against a small server that misbehaves: a malformed page is one
clear error logged once, and a list that repeats itself is read no further.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import BATCH
from airflow_psopenai.waiting.waits import run_in_worker, wait_for_each
from tests.gateway import Gateway, batch, page

if TYPE_CHECKING:
    from collections.abc import Callable

# Each test talks to a misbehaving gateway it starts on 127.0.0.1.
pytestmark = [pytest.mark.timeout(60), pytest.mark.server]


def test_a_malformed_page_is_one_clear_error_logged_once(
    connect: Callable[..., None], logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    items = [batch(f"batch_{n}", "cancelling") for n in range(4)]
    # The page holds three of the four batches: the walk goes on from its last item, which is no object.
    with Gateway(items, lists=lambda _after, _n: page([*items[:3], "junk"], has_more=True)) as gateway:
        connect(gateway)
        id_sets = [{"batch_id": item["id"]} for item in items]

        async def waits() -> list[dict[str, Any]]:
            return await wait_for_each(
                PSOpenAIHook(),
                BATCH,
                id_sets,
                poll_interval=0.05,
                deadline=Deadline.after(1),
                log=logging.getLogger("test"),
            )

        events = run_in_worker(PSOpenAIHook(), waits)
        assert [event["status"] for event in events] == ["timeout"] * 4
        out, err = capfd.readouterr()
        said = "\n".join([logs.text, out, err])
        assert "Traceback" not in said and "AttributeError" not in said
        assert not any(record.exc_info for record in logs.records)
        # Once, wherever this Airflow line sends the hook's log lines (stdout, or Python's logging on 3.0).
        warning = "holds something that is no object ('junk')"
        assert max(out.count(warning), logs.text.count(warning)) == 1, said
        assert len(gateway.requests(kind="list")) == 1
        assert len(gateway.requests(kind="get")) >= 8  # the waits went on with their own GETs


def test_a_board_stops_reading_a_list_that_repeats_itself(
    connect: Callable[..., None], capfd: pytest.CaptureFixture[str]
) -> None:
    """Waits deeper than the first page walk from the head: a list that ignores ``after`` ends that walk at once."""
    items = [batch(f"batch_{n}", "cancelling", created_at=1000 - n) for n in range(6)]
    with Gateway(items, lists=lambda _after, _n: page(items[:3], has_more=True)) as gateway:
        connect(gateway)
        id_sets = [{"batch_id": item["id"]} for item in items]

        listed_after_first_waits: list[int] = []

        async def waits() -> list[dict[str, Any]]:
            def wait() -> Any:
                return wait_for_each(
                    PSOpenAIHook(),
                    BATCH,
                    id_sets,
                    poll_interval=0.05,
                    deadline=Deadline.after(1),
                    log=logging.getLogger("t"),
                )

            await wait()
            listed_after_first_waits.append(len(gateway.requests(kind="list")))
            # The same event loop, so the same board: turned off, it reads no list page for later waits.
            return await wait()

        run_in_worker(PSOpenAIHook(), waits)
        # Rounds that started before the walk reached the repeated page may each have read a page or two; how
        # many depends on the machine's speed, so the bound is counted on waits that came after, not in time.
        assert len(gateway.requests(kind="list")) == listed_after_first_waits[0]
        out, _ = capfd.readouterr()
        assert out.count("the batch list repeats itself") == 1
