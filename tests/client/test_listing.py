"""The listing walk's decisions, with a page reader made by hand: the cutoff and its margin, the metadata
match, the page cap, a failed page read again, and what a walk that cannot read all keeps."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.client import retry
from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.client.listing import awalk_list, cutoff_margin, walk_list
from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIServerError
from airflow_psopenai.resources import BATCH

if TYPE_CHECKING:
    from collections.abc import Callable

NOW = 1_800_000_000
TAGS = {"airflow_run_id": "run-1"}


def batch(number: int, created_at: int = NOW, **metadata: str) -> dict[str, Any]:
    return {"id": f"batch_{number:04d}", "created_at": created_at, "metadata": metadata}


def reader(items: list[dict[str, Any]], fail: Callable[[str | None, int], Exception | None] = lambda *_: None) -> Any:
    """Serve ``items`` newest first, 2 to a page; ``fail(after, n)`` may fail the n-th read instead."""
    reads: list[str | None] = []

    def read(after: str | None, _deadline: Deadline) -> dict[str, Any]:
        reads.append(after)
        if (error := fail(after, len(reads))) is not None:
            raise error
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else 0
        return {"data": items[start : start + 2], "has_more": start + 2 < len(items)}

    read.reads = reads  # type: ignore[attr-defined]
    return read


def walk(read: Any, **kwargs: Any) -> Any:
    return walk_list(read, BATCH, str, **{"metadata": TAGS, "since": None, **kwargs})


def bad_gateway() -> PSOpenAIServerError:
    return PSOpenAIServerError("Bad gateway.", http_status=502, retryable=True)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry, "BASE_DELAY_SEC", 0.001)


def test_the_walk_keeps_the_matches_and_stops_at_the_cutoff_less_the_margin() -> None:
    margin = cutoff_margin()
    items = [batch(0, **TAGS), batch(1), batch(2, NOW - 100, **TAGS), batch(3, NOW - int(margin) - 1, **TAGS)]
    listed = walk(reader(items), since=NOW)
    assert [item["id"] for item in listed.found] == ["batch_0000", "batch_0002"]  # 100 s before: within the margin
    assert (listed.scanned, listed.pages, listed.complete) == (3, 2, True)


def test_a_none_in_the_metadata_means_the_key_is_absent() -> None:
    items = [batch(0, airflow_map_index="0", **TAGS), batch(1, **TAGS)]
    listed = walk(reader(items), metadata={**TAGS, "airflow_map_index": None})
    assert [item["id"] for item in listed.found] == ["batch_0001"]


def test_a_page_that_fails_once_is_read_again() -> None:
    read = reader([batch(n, **TAGS) for n in range(4)], lambda after, n: bad_gateway() if n == 2 else None)
    listed = walk(read)
    assert len(listed.found) == 4 and listed.complete
    assert read.reads == [None, "batch_0001", "batch_0001"]


def test_a_page_that_keeps_failing_ends_the_walk_with_what_was_found() -> None:
    read = reader([batch(n, **TAGS) for n in range(4)], lambda after, _n: bad_gateway() if after else None)
    listed = walk(read)
    assert [item["id"] for item in listed.found] == ["batch_0000", "batch_0001"]
    assert isinstance(listed.unread, PSOpenAIServerError)
    assert listed.what_was_not_read("batch") == "the batch list past page 1 (Bad gateway. (HTTP 502))"
    assert len(read.reads) == 4  # the first page, then three reads of the second


def test_a_refusal_is_not_read_again_and_a_spent_budget_reads_nothing_more() -> None:
    from airflow_psopenai.exceptions import PSOpenAINotFoundError

    read = reader([batch(0)], lambda *_: PSOpenAINotFoundError("Not here.", http_status=404))
    assert walk(read).what_was_not_read("batch").startswith("the whole batch list (Not here.")
    assert len(read.reads) == 1
    spent = reader([batch(0)], lambda *_: bad_gateway())
    walk(spent, deadline=Deadline.budget(0))
    assert len(spent.reads) == 1  # no backoff fits in a spent budget


def test_the_page_cap_ends_the_walk_and_says_so() -> None:
    listed = walk(reader([batch(n, **TAGS) for n in range(10)]), max_pages=2)
    assert listed.capped and not listed.complete and len(listed.found) == 4
    assert listed.what_was_not_read("batch") == "the batch list past page 2 (the walk's cap of 2 pages)"


def test_the_awaited_walk_decides_the_same() -> None:
    read = reader([batch(n, **TAGS) for n in range(4)], lambda after, n: bad_gateway() if n == 2 else None)

    async def aread(after: str | None, deadline: Deadline) -> dict[str, Any]:
        return read(after, deadline)  # type: ignore[no-any-return]

    listed = asyncio.run(awalk_list(aread, BATCH, str, metadata=TAGS, since=None))
    assert len(listed.found) == 4 and listed.complete


@pytest.mark.parametrize(("value", "margin"), [(None, 300.0), ("0", 0.0), ("42.5", 42.5)])
def test_the_cutoff_margin_setting(monkeypatch: pytest.MonkeyPatch, value: str | None, margin: float) -> None:
    if value is not None:
        monkeypatch.setenv("AIRFLOW__PSOPENAI__CUTOFF_MARGIN_SEC", value)
    assert cutoff_margin() == margin


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_a_bad_cutoff_margin_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AIRFLOW__PSOPENAI__CUTOFF_MARGIN_SEC", value)
    with pytest.raises(PSOpenAIConfigurationError, match=r"\[psopenai\] cutoff_margin_sec must be a number"):
        cutoff_margin()
