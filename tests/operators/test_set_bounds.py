"""Bounds of the set paths (the failure callback, StopBatchesOperator's listing and cancels) against a small
server that misbehaves: lists that never end, slow or hanging pages, corrupt bodies, junk items, a key echoed
in headers. The listener's are in tests/test_plugin.py, the status board's in tests/waiting/test_board_bounds.py.

Time is asserted only as an upper bound far above the budget (a loaded machine makes calls slower, never
faster); the buggy behaviour these tests guard against took many times longer, or never ended.
"""

from __future__ import annotations

import base64
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.callbacks import cancel_run_batches_with
from airflow_psopenai.cancelling.bulk import batches_by_metadata, cancel_each
from airflow_psopenai.cancelling.cancel import CancelPolicy, check_cancel_options
from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIError, PSOpenAIInvalidResponseError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import BATCH
from airflow_psopenai.waiting.waits import run_in_worker, wait_until_settled
from tests.gateway import (
    GATEWAY_KEY,
    HANG,
    SLACK_SEC,
    TAGS,
    Gateway,
    Reply,
    batch,
    corrupt,
    page,
    run_context,
    tagged,
)

if TYPE_CHECKING:
    from collections.abc import Callable

# Each test talks to a misbehaving gateway it starts on 127.0.0.1.
pytestmark = [pytest.mark.timeout(60), pytest.mark.server]

KEY = GATEWAY_KEY


def bounded(call: Callable[[], object], limit: float) -> float:
    """Run ``call`` in a thread; return how long it took, failing if it has not returned within ``limit``."""
    done = threading.Event()
    started = time.monotonic()
    thread = threading.Thread(target=lambda: (call(), done.set()), daemon=True)
    thread.start()
    assert done.wait(limit), f"still running after {limit} s"
    return time.monotonic() - started


def hook(**kwargs: Any) -> PSOpenAIHook:
    return PSOpenAIHook(**kwargs)


# -- 1. a list that never ends ---------------------------------------------------------------------------------


def same_page(items: list[dict[str, Any]]) -> Callable[[str | None, int], Reply]:
    return lambda _after, _n: page(items, has_more=True)


def pages_in_turn(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> Callable[[str | None, int], Reply]:
    return lambda _after, n: page(first if n % 2 == 0 else second, has_more=True)


@pytest.mark.parametrize("kind", ["same page", "two pages in turn"])
def test_a_list_that_ignores_after_is_an_error_named_as_such(
    connect: Callable[..., None], logs: pytest.LogCaptureFixture, kind: str
) -> None:
    items = tagged(6)
    lists = same_page(items) if kind == "same page" else pages_in_turn(items[:3], items[3:])
    with Gateway(items, lists=lists) as gateway:
        connect(gateway)
        with pytest.raises(PSOpenAIInvalidResponseError, match="the batch list repeats itself; a gateway that ignores"):
            batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))
        assert len(gateway.requests(kind="list")) <= 3

        # The callback: ends, says why, and cancels the batches the list did show, each once.
        listed_before = len(gateway.requests(kind="list"))
        bounded(lambda: cancel_run_batches_with(timeout_sec=2)(run_context()), 2 + SLACK_SEC)
        assert "Not looked at: the batch list past page" in logs.text
        assert "the batch list repeats itself" in logs.text
        assert len(gateway.requests(kind="list")) - listed_before <= 3 + len(items)  # its walk, the looks' pages
        assert sorted(gateway.cancelled()) == sorted(item["id"] for item in items)


def test_a_list_of_fresh_pages_for_ever_stops_at_the_page_cap(
    connect: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = itertools.count()

    def endless(_after: str | None, _n: int) -> Reply:
        return page([batch(f"batch_{next(numbers)}", **TAGS) for _ in range(2)])

    from airflow_psopenai.client import listing

    monkeypatch.setattr(listing, "MAX_PAGES", 5)
    with Gateway(lists=endless) as gateway:
        connect(gateway)
        with pytest.raises(PSOpenAIInvalidResponseError, match="more than 5 pages"):
            batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))
        assert len(gateway.requests(kind="list")) == 5


# -- 8. a batch listed twice --------------------------------------------------------------------------------


def test_a_batch_listed_twice_is_cancelled_once(connect: Callable[..., None]) -> None:
    items = tagged(4)

    def overlapping(after: str | None, _n: int) -> Reply:
        # The second page starts again with the first page's last batch, and repeats one inside it.
        if after is None:
            return page([items[0], items[1], items[1]])
        return page([items[1], items[2], items[3]], has_more=False)

    with Gateway(items, lists=overlapping) as gateway:
        connect(gateway)
        found = batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))
        assert [item["id"] for item in found] == [item["id"] for item in items]
        cancel_run_batches_with(timeout_sec=10)(run_context())
        assert sorted(gateway.cancelled()) == sorted(item["id"] for item in items)


# -- 2. one budget per call -----------------------------------------------------------------------------------


def test_the_callbacks_budget_covers_slow_pages(connect: Callable[..., None]) -> None:
    items = tagged(8)

    def slow(after: str | None, _n: int) -> Reply:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else 0
        return Reply(page(items[start : start + 1], has_more=start + 1 < len(items)).body, delay=0.8)

    with Gateway(items, lists=slow) as gateway:
        connect(gateway)
        took = bounded(lambda: cancel_run_batches_with(timeout_sec=1.5)(run_context()), 1.5 + SLACK_SEC)
        assert took < 1.5 + SLACK_SEC
        assert len(gateway.requests(kind="list")) <= 3


def test_the_callbacks_budget_covers_every_retry_of_a_hanging_page(
    connect: Callable[..., None], logs: pytest.LogCaptureFixture
) -> None:
    with Gateway(tagged(2), lists=lambda _after, _n: HANG) as gateway:
        connect(gateway, max_retry_count=3)
        bounded(lambda: cancel_run_batches_with(timeout_sec=1)(run_context()), 1 + SLACK_SEC)
        assert "cancel_run_batches" in logs.text


def test_the_callbacks_budget_covers_the_cancels_and_reports_those_not_started(
    connect: Callable[..., None], logs: pytest.LogCaptureFixture
) -> None:
    items = tagged(40)
    with Gateway(items, cancels=lambda _batch_id: HANG) as gateway:
        connect(gateway)
        bounded(lambda: cancel_run_batches_with(timeout_sec=1.5, max_concurrency=4)(run_context()), 1.5 + SLACK_SEC)
        assert len(gateway.cancelled()) < 40
        from airflow_psopenai.cancelling.bulk import NOT_ATTEMPTED

        assert NOT_ATTEMPTED in logs.text
        assert "40 batches tagged with it" in logs.text


def test_a_budget_has_no_floor_but_a_waits_last_poll_has() -> None:
    spent = Deadline.budget(0)
    assert spent.poll_limit() == 0
    assert Deadline.after(0).poll_limit() >= 1  # a wait's last poll, made at its deadline
    assert Deadline.budget(None).poll_limit() is None


def test_list_page_takes_the_deadline(connect: Callable[..., None]) -> None:
    with Gateway(tagged(1), lists=lambda _after, _n: HANG) as gateway:
        connect(gateway, max_retry_count=3)
        started = time.monotonic()
        with pytest.raises(PSOpenAIError, match=r"budget|deadline"):
            hook().list_page(BATCH, deadline=Deadline.budget(0.5))
        assert time.monotonic() - started < 0.5 + SLACK_SEC

        async def alist() -> object:
            return await hook().alist_page(BATCH, deadline=Deadline.budget(0.5))

        started = time.monotonic()
        with pytest.raises(PSOpenAIError, match=r"budget|deadline"):
            run_in_worker(hook(), alist)
        assert time.monotonic() - started < 0.5 + SLACK_SEC


def test_a_spent_budget_sends_nothing(connect: Callable[..., None]) -> None:
    with Gateway(tagged(1)) as gateway:
        connect(gateway)
        with pytest.raises(PSOpenAIError, match="not sent"):
            hook().list_page(BATCH, deadline=Deadline.budget(0))
        assert gateway.requests() == []


# -- 5. corrupt answers ---------------------------------------------------------------------------------------


def test_a_corrupt_answer_is_an_invalid_response_everywhere(
    connect: Callable[..., None], logs: pytest.LogCaptureFixture
) -> None:
    items = tagged(5)
    broken = items[2]["id"]
    gets_left = [1]

    def corrupt_once(_batch_id: str) -> Reply | None:
        if gets_left[0]:
            gets_left[0] -= 1
            return corrupt()
        return None

    with Gateway(items, cancels=lambda batch_id: corrupt() if batch_id == broken else None) as gateway:
        connect(gateway)
        with pytest.raises(PSOpenAIInvalidResponseError, match="could not be read"):
            hook().cancel_batch(broken)
        ids = [item["id"] for item in items]
        policy = CancelPolicy(force=True)
        outcomes = run_in_worker(
            hook(), lambda: cancel_each(hook(), ids, policy, max_concurrency=2, deadline=Deadline.budget(30))
        )
        assert [o.batch_id for o in outcomes] == ids
        failed = [o for o in outcomes if o.error is not None]
        assert [o.batch_id for o in failed] == [broken]
        assert "could not be read" in str(failed[0].error)

    # A wait takes a corrupt answer as transient and polls again.
    done = batch("batch_done", "cancelled")
    with Gateway([done], gets=corrupt_once) as gateway:
        connect(gateway)

        async def wait() -> dict[str, Any]:
            return await wait_until_settled(
                hook(),
                BATCH,
                {"batch_id": "batch_done"},
                poll_interval=0.05,
                deadline=Deadline.after(20),
                deadline_name="the test",
                log=logging.getLogger("test"),
            )

        event = run_in_worker(hook(), wait)
        assert event["status"] == "settled"
        assert len(gateway.requests(kind="get")) == 2


def test_a_corrupt_list_page_is_a_clear_error_of_the_listing(
    connect: Callable[..., None], logs: pytest.LogCaptureFixture
) -> None:
    with Gateway(tagged(2), lists=lambda _after, _n: corrupt()) as gateway:
        connect(gateway)
        with pytest.raises(PSOpenAIInvalidResponseError, match="could not be read"):
            batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))
        cancel_run_batches_with(timeout_sec=5)(run_context())
        assert "for the batch list could not be read: its body does not match its Content-Encoding" in logs.text
        assert not any(record.exc_info for record in logs.records)  # one clear line, no traceback


# -- 6. the key in headers and encoded forms ------------------------------------------------------------------


def key_forms() -> list[str]:
    bearer = f"Bearer {KEY}"
    return [
        KEY,
        KEY[:40],
        KEY[-20:],
        base64.b64encode(KEY.encode()).decode(),
        base64.b64encode(bearer.encode()).decode(),
        base64.b64encode(bearer.encode()).decode()[4:30],
        base64.urlsafe_b64encode(KEY.encode()).decode(),
    ]


def test_the_key_in_a_request_id_or_base64_in_a_message_is_never_printed(
    connect: Callable[..., None], logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    items = tagged(3)
    encoded = base64.b64encode(f"Bearer {KEY}".encode()).decode()
    echo = {"x-request-id": KEY[:40]}
    failing = Reply(
        {"error": {"message": f"upstream saw Authorization {encoded} and {base64.b64encode(KEY.encode()).decode()}"}},
        status=500,
        headers=echo,
    )
    with Gateway(items, cancels=lambda _batch_id: failing) as gateway:
        connect(gateway, max_retry_count=1)
        cancel_run_batches_with(timeout_sec=10)(run_context())
        assert len(gateway.cancelled()) >= 3
        errors: list[BaseException] = []
        for call in (lambda: hook().cancel_batch(items[0]["id"]),):
            try:
                call()
            except PSOpenAIError as error:
                errors.append(error)
    with Gateway(
        items,
        lists=lambda _after, _n: Reply(
            "<html>denied</html>", status=502, headers={"x-request-id": KEY, "content-type": f"text/html; key={KEY}"}
        ),
    ) as gateway:
        connect(gateway)
        try:
            batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))
        except PSOpenAIError as error:
            errors.append(error)
    with Gateway(items, lists=lambda _after, _n: page([{"id": 5}, "junk"], **{"x-request-id": KEY})) as gateway:
        connect(gateway)
        try:
            batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))
        except PSOpenAIError as error:
            errors.append(error)
    assert len(errors) == 3
    out, err = capfd.readouterr()
    text = "\n".join([logs.text, out, err, *(f"{error!s}\n{error!r}\n{vars(error)}" for error in errors)])
    for form in key_forms():
        assert form not in text


# -- 7. list items without status or id -----------------------------------------------------------------------


def test_a_list_item_without_status_is_never_taken_as_a_status(connect: Callable[..., None]) -> None:
    items = tagged(5)
    bare = [{key: value for key, value in item.items() if key != "status"} for item in items]
    with Gateway(items, lists=lambda _after, _n: page(bare, has_more=False)) as gateway:
        connect(gateway)
        ids = [item["id"] for item in items]
        policy = CancelPolicy(if_not_cancellable="succeed")
        outcomes = run_in_worker(
            hook(), lambda: cancel_each(hook(), ids, policy, max_concurrency=5, deadline=Deadline.budget(30))
        )
        assert [o.found for o in outcomes] == ["in_progress"] * 5
        assert sorted(gateway.cancelled()) == sorted(ids)
        assert len(gateway.requests(kind="get")) == 5  # each fell back to its own GET

    # The callback's listing does not drop them as "not running": it looks at each.
    with Gateway(items, lists=lambda _after, _n: page(bare, has_more=False)) as gateway:
        connect(gateway)
        cancel_run_batches_with(timeout_sec=10)(run_context())
        assert sorted(gateway.cancelled()) == sorted(ids)


def test_a_list_item_without_id_is_skipped_by_the_listing(connect: Callable[..., None]) -> None:
    items = tagged(2)
    with Gateway(
        items, lists=lambda _after, _n: page([*items, {"status": "in_progress", "metadata": TAGS}], has_more=False)
    ) as gateway:
        connect(gateway)
        found = batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))
        assert [item["id"] for item in found] == [item["id"] for item in items]


# -- 9. raw errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [5, "text", None, {"id": "x"}])
def test_a_page_without_a_list_of_data_is_a_clear_error(connect: Callable[..., None], data: object) -> None:
    with Gateway(lists=lambda _after, _n: Reply({"object": "list", "data": data, "has_more": True})) as gateway:
        connect(gateway)
        with pytest.raises(PSOpenAIInvalidResponseError, match="the batch list"):
            batches_by_metadata(hook(), TAGS, None, logging.getLogger("test"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_created_after_refuses_nan_and_infinities(value: float) -> None:
    from airflow_psopenai.operators import StopBatchesOperator

    with pytest.raises(PSOpenAIConfigurationError, match="created_after"):
        StopBatchesOperator(task_id="stop", metadata=TAGS, created_after=value)  # refused as the DAG is parsed
    with pytest.raises(PSOpenAIConfigurationError, match="created_after"):
        batches_by_metadata(hook(), TAGS, value, logging.getLogger("test"))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 0, -1, True, "1"])
def test_poll_interval_refuses_nan_infinities_and_the_rest(value: object) -> None:
    with pytest.raises(PSOpenAIConfigurationError, match="poll_interval must be"):
        check_cancel_options("fail", value, None)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_wait_timeout_refuses_nan_and_infinities(value: float) -> None:
    with pytest.raises(PSOpenAIConfigurationError, match="wait_timeout must be"):
        check_cancel_options("fail", 1.0, value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"timeout_sec": float("nan")}, "timeout_sec must be"),
        ({"timeout_sec": float("inf")}, "timeout_sec must be"),
        ({"timeout_sec": 0}, "timeout_sec must be"),
        ({"max_concurrency": 0}, "max_concurrency must be"),
        ({"max_concurrency": 2.5}, "max_concurrency must be"),
    ],
)
def test_the_callbacks_arguments_are_checked_where_it_is_made(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(PSOpenAIConfigurationError, match=message):
        cancel_run_batches_with(**arguments)
