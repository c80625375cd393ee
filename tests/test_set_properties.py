"""Properties of the set paths whatever the batch list answers: the failure callback and the set's wait.

Driven by hypothesis against a small server on 127.0.0.1 (tests/gateway.py) whose list answers are drawn:
honest pages, the same page again (a gateway ignoring ``after``), pages in a cycle, junk items, items
without status or ID, slow pages, hangs, corrupt bodies, errors quoting the key in their request id. The
invariants:

- the callback returns within its ``timeout_sec``, and the wait by its deadline (plus its last poll);
- at most one cancel per batch;
- the key never appears in a log line, the standard streams or an event, in any form;
- only this provider's errors come out, and the callback raises none.

The bounds are asserted as a generous upper limit (a loaded machine makes calls slower, never faster):
the code before these properties held took many times longer, or never returned.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_psopenai.callbacks import cancel_run_batches_with
from airflow_psopenai.client import retry as retry_module
from airflow_psopenai.client.deadline import LAST_POLL_SEC, Deadline
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import BATCH
from airflow_psopenai.waiting.waits import run_in_worker, wait_for_each
from tests.connections import conn_json, unique_key
from tests.gateway import HANG, Gateway, Reply, batch, corrupt, page

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# The properties run against a misbehaving gateway on 127.0.0.1.
pytestmark = [pytest.mark.timeout(600), pytest.mark.server]

KEY = "sk-proj-" + unique_key()[8:] + "+/="
TAGS = {"airflow_dag_id": "pipeline", "airflow_run_id": "run-1"}
BUDGET_SEC = 1.0
WAIT_SEC = 0.5
# Far above the bounds, far below "never" (scheduling noise of a loaded 2-core machine).
SLACK_SEC = 5.0

BEHAVIOURS = ("honest", "same page", "cycle", "junk", "no status", "no id", "slow", "hang", "corrupt", "key echo")


class Records(logging.Handler):
    """Every log record of this provider and Airflow, formatted.

    Not httpcore's DEBUG trace, which quotes raw response headers (a key echoed in one included): it is
    not this provider's text, is off below DEBUG, and Airflow's secrets masker covers the key as it is.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("httpcore"):
            self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def fast_retries() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(retry_module, "BASE_DELAY_SEC", 0.001)
        yield


@pytest.fixture
def said() -> Iterator[Records]:
    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    previous = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(records)
        root.setLevel(previous)


def key_forms() -> list[str]:
    bearer = f"Bearer {KEY}".encode()
    return [
        KEY,
        KEY[:20],
        KEY[-20:],
        json.dumps(KEY)[1:-1],
        base64.b64encode(KEY.encode()).decode()[:-4],
        base64.b64encode(bearer).decode()[12:-4],
    ]


def lists_of(script: list[str], items: list[dict[str, Any]]) -> Callable[[str | None, int], Reply]:
    """Return the list's answers: the n-th list request gets ``script[n]`` (the last one from then on)."""
    ids = [item["id"] for item in items]

    def honest(after: str | None) -> Reply:
        start = ids.index(after) + 1 if after in ids else 0
        return page(items[start : start + 2], has_more=start + 2 < len(items))

    def answer(after: str | None, n: int) -> Reply:
        behaviour = script[min(n, len(script) - 1)]
        if behaviour == "same page":
            return page(items[:2], has_more=True)
        if behaviour == "cycle":
            return page(items[:2] if n % 2 == 0 else items[2:4], has_more=True)
        if behaviour == "junk":
            return page([*items[:1], 5, f"junk {KEY}", None], has_more=True)
        if behaviour == "no status":
            return page([{k: v for k, v in item.items() if k != "status"} for item in items], has_more=False)
        if behaviour == "no id":
            return page([{k: v for k, v in item.items() if k != "id"} for item in items], has_more=False)
        if behaviour == "slow":
            return Reply(honest(after).body, delay=0.3)
        if behaviour == "hang":
            return HANG
        if behaviour == "corrupt":
            return corrupt(**{"x-request-id": KEY})
        if behaviour == "key echo":
            encoded = base64.b64encode(f"Bearer {KEY}".encode()).decode()
            return Reply({"error": {"message": f"upstream: {encoded}"}}, status=502, headers={"x-request-id": KEY})
        return honest(after)

    return answer


SCRIPTS = st.lists(st.sampled_from(BEHAVIOURS), min_size=1, max_size=4)
STATUSES = st.lists(
    st.sampled_from(["in_progress", "in_progress", "validating", "completed", "cancelling"]), min_size=1, max_size=6
)


def assert_no_key(records: Records, capfd: pytest.CaptureFixture[str], *things: object) -> None:
    out, err = capfd.readouterr()
    text = "\n".join([*records.lines, out, err, *(f"{thing!s}\n{thing!r}" for thing in things)])
    for form in key_forms():
        assert form not in text


@settings(max_examples=30)
@given(script=SCRIPTS, statuses=STATUSES, retries=st.sampled_from([0, 2]))
def test_the_callback_is_bounded_cancels_each_batch_at_most_once_and_never_prints_the_key(
    fast_retries: None,
    said: Records,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    script: list[str],
    statuses: list[str],
    retries: int,
) -> None:
    items = [batch(f"batch_{n}", status, created_at=2_000_000_000 - n, **TAGS) for n, status in enumerate(statuses)]
    said.lines.clear()
    capfd.readouterr()
    with Gateway(items, lists=lists_of(script, items)) as gateway:
        monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", conn_json(gateway.api_base, KEY, max_retry_count=retries))
        escaped: list[BaseException] = []

        def call() -> None:
            try:
                cancel_run_batches_with(timeout_sec=BUDGET_SEC)(
                    {"dag_run": SimpleNamespace(dag_id="pipeline", run_id="run-1", run_after=None)}
                )
            except BaseException as error:  # the property checks that nothing escapes
                escaped.append(error)

        done = threading.Thread(target=call, daemon=True)
        started = time.monotonic()
        done.start()
        done.join(BUDGET_SEC + SLACK_SEC)
        assert not done.is_alive(), f"the callback ran past {BUDGET_SEC + SLACK_SEC} s for {script}"
        assert time.monotonic() - started < BUDGET_SEC + SLACK_SEC
        assert escaped == []
        cancelled = gateway.cancelled()
        assert len(cancelled) == len(set(cancelled))
        assert set(cancelled) <= {item["id"] for item in items if item["status"] in ("in_progress", "validating")}
    assert_no_key(said, capfd)


@settings(max_examples=25)
@given(script=SCRIPTS, count=st.integers(min_value=1, max_value=6))
def test_the_set_wait_ends_by_its_deadline_and_never_prints_the_key(
    fast_retries: None,
    said: Records,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    script: list[str],
    count: int,
) -> None:
    items = [batch(f"batch_{n}", "cancelling", created_at=2_000_000_000 - n) for n in range(count)]
    said.lines.clear()
    capfd.readouterr()
    with Gateway(items, lists=lists_of(script, items)) as gateway:
        monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", conn_json(gateway.api_base, KEY, max_retry_count=1))
        hook = PSOpenAIHook()
        id_sets = [{"batch_id": item["id"]} for item in items]

        async def waits() -> list[dict[str, Any]]:
            return await wait_for_each(
                hook,
                BATCH,
                id_sets,
                poll_interval=0.05,
                deadline=Deadline.after(WAIT_SEC),
                log=logging.getLogger("test"),
            )

        started = time.monotonic()
        events = run_in_worker(hook, waits)
        assert time.monotonic() - started < WAIT_SEC + LAST_POLL_SEC + SLACK_SEC
        assert [event["status"] for event in events] == ["timeout"] * count  # none settles: all "cancelling"
        assert gateway.cancelled() == []
    assert_no_key(said, capfd, events)
