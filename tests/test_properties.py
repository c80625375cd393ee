"""Properties that hold whatever comes in: random IDs, random answers, random faults on cancels and polls.

Driven by hypothesis against the emulator over real HTTP. The invariants:

- only this provider's errors escape (never a bare ``KeyError``, an ``httpx`` or ``h11`` exception);
- the key never appears in an error, a log record or an event, in any form;
- a request never leaves the object's path;
- at most one cancel per object takes effect;
- every wait ends by its deadline (plus the one poll made at it).

The profile (``tests/conftest.py``) is derandomized, so CI runs the same examples every time; a
failing example found once is kept below as a plain regression test.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_psopenai.client import retry as retry_module
from airflow_psopenai.client.deadline import LAST_POLL_SEC, Deadline
from airflow_psopenai.client.pool import aclose_shared_clients
from airflow_psopenai.exceptions import PSOpenAIError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import BATCH, THREAD_RUN
from airflow_psopenai.testing import Fault, OpenAIEmulator
from airflow_psopenai.waiting.events import check_event
from airflow_psopenai.waiting.waits import wait_until_settled
from tests.connections import unique_key

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_psopenai.resources import CancellableResource

pytestmark = pytest.mark.timeout(600)

KEY = "sk-proj-" + unique_key()[8:] + "+/="  # characters that escaping changes, so escaped echoes are tried too
# Scheduling noise on a loaded 2-core machine, on top of the poll made at the deadline.
DEADLINE_SLACK_SEC = 1.0


class Records(logging.Handler):
    """Every log record of every logger, formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def emulator() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator(api_key=KEY) as running, pytest.MonkeyPatch.context() as patch:
        connection = {"conn_type": "psopenai", "host": running.api_base, "password": KEY}
        patch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", json.dumps(connection))
        patch.setattr(retry_module, "BASE_DELAY_SEC", 0.001)  # backoff in milliseconds
        yield running


@pytest.fixture
def said(capfd: pytest.CaptureFixture[str]) -> Iterator[Records]:
    """Collect what is logged, to the logging module and to the standard streams (structlog)."""
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


def fresh(emulator: OpenAIEmulator, records: Records, capfd: pytest.CaptureFixture[str]) -> None:
    """Start an example from a clean emulator and empty logs."""
    emulator.reset()
    emulator.cancel_delay = 0.2
    records.lines.clear()
    capfd.readouterr()


def key_forms() -> list[str]:
    return [KEY, KEY[:20], KEY[-20:], quote(KEY, safe=""), json.dumps(KEY)[1:-1], KEY.replace("+", "&#43;")]


def assert_no_key(records: Records, capfd: pytest.CaptureFixture[str], *things: object) -> None:
    out, err = capfd.readouterr()
    text = "\n".join([*records.lines, out, err, *(f"{thing!s}\n{thing!r}" for thing in things)])
    for form in key_forms():
        assert form not in text


def run_both(hook: PSOpenAIHook, method: str, *args: Any, **kwargs: Any) -> list[object]:
    """Call the sync and the async method; return what each returned or raised."""
    outcomes: list[object] = []
    try:
        outcomes.append(getattr(hook, method)(*args, **kwargs))
    except Exception as error:  # the property checks what escaped
        outcomes.append(error)

    async def asynchronous() -> object:
        try:
            return await getattr(hook, "a" + method)(*args, **kwargs)
        except Exception as error:
            return error
        finally:
            await aclose_shared_clients()

    outcomes.append(asyncio.run(asynchronous()))
    return outcomes


def assert_only_our_errors(outcomes: list[object]) -> None:
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, PSOpenAIError), f"{type(outcome).__module__}.{type(outcome).__name__}: {outcome}"


# -- random IDs ---------------------------------------------------------------------------------------------

IDS = st.one_of(
    st.text(min_size=0, max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=60),
    st.sampled_from(["..", ".", "/", "%", "%2F", "a/../b", "?x=1", "#frag", " batch_padded \n", "None", "[1, 2]"]),
    st.text(alphabet="/.%?#ab", min_size=1, max_size=12),
    st.text(min_size=2000, max_size=9000),
)


@settings(max_examples=150)
@given(batch_id=IDS)
def test_any_id_stays_in_its_path(
    emulator: OpenAIEmulator, said: Records, capfd: pytest.CaptureFixture[str], batch_id: str
) -> None:
    fresh(emulator, said, capfd)
    if batch_id.strip():
        emulator.create_batch(batch_id=batch_id.strip())
    hook = PSOpenAIHook()
    outcomes = run_both(hook, "get_object", BATCH, {"batch_id": batch_id})
    assert_only_our_errors(outcomes)
    for outcome in outcomes:
        if isinstance(outcome, dict):
            assert outcome["id"] == batch_id.strip()
    for entry in emulator.journal:
        assert entry.path == f"/v1/batches/{batch_id.strip()}" or entry.status in (400, 414, 431)
        assert entry.raw_target.startswith("/v1/batches/")
        assert "/" not in entry.raw_target.removeprefix("/v1/batches/")  # one segment, whatever the ID holds
    assert_no_key(said, capfd, *outcomes)


# -- random answers -----------------------------------------------------------------------------------------

RETRY_AFTER = st.one_of(
    st.floats(min_value=-100, max_value=1e6).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e400"]),
    st.integers(min_value=-5, max_value=10**9).map(str),
    st.sampled_from(["", "soon", "0", "0.01", "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2099 07:28:00 -0000"]),
    st.text(max_size=20),
)
HEADERS = st.dictionaries(
    st.sampled_from(["retry-after", "retry-after-ms", "x-should-retry", "x-request-id", "content-encoding-x"]),
    st.one_of(RETRY_AFTER, st.sampled_from(["true", "false", "TRUE", "maybe"])),
    max_size=4,
).map(lambda headers: {name: "".join(c for c in value if " " <= c <= "~") for name, value in headers.items()})
BODIES = st.one_of(
    st.text(max_size=200),
    st.sampled_from(key_forms()).map(lambda form: f"<html><pre>Authorization: Bearer {form}</pre></html>"),
    st.sampled_from(key_forms()).map(
        lambda form: json.dumps({"error": {"message": f"bad key {form}", "type": "x", "code": "invalid_api_key"}})
    ),
    st.sampled_from(key_forms()).map(lambda form: json.dumps({"error": {"message": {"nested": form}}})),
    st.sampled_from(["{}", "[]", "null", '{"error": null}', '{"error": "text"}', '{"id": 1, "status": 2}', "{"]),
)


@settings(max_examples=150)
@given(
    status=st.integers(min_value=200, max_value=599),
    body=BODIES,
    content_type=st.sampled_from([None, "text/html", "text/plain", "application/json; charset=utf-8", "x/y"]),
    headers=HEADERS,
    method=st.sampled_from(["get_object", "cancel_object"]),
    retries=st.integers(min_value=0, max_value=2),
)
def test_any_answer_gives_an_object_or_one_of_our_errors_without_the_key(
    emulator: OpenAIEmulator,
    said: Records,
    capfd: pytest.CaptureFixture[str],
    status: int,
    body: str,
    content_type: str | None,
    headers: dict[str, str],
    method: str,
    retries: int,
) -> None:
    fresh(emulator, said, capfd)
    batch = emulator.create_batch()
    for _ in range(2):  # the sync and the async call each meet it (and their retries the normal answer)
        emulator.add_fault(Fault.answer(status, body, content_type=content_type, headers=headers))
    hook = PSOpenAIHook(max_retry_count=retries)
    started = time.monotonic()
    outcomes = run_both(hook, method, BATCH, {"batch_id": batch["id"]}, deadline=Deadline.after(2))
    assert time.monotonic() - started < 2 * (2 + LAST_POLL_SEC + DEADLINE_SLACK_SEC)
    assert_only_our_errors(outcomes)
    # A 2xx JSON object is the API's own object, passed on as it is: errors and logs are what must be clean.
    errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert_no_key(said, capfd, *errors, *(getattr(error, "api_message", None) for error in errors))


# -- random faults on a cancel and its wait -----------------------------------------------------------------

FAULTS = st.sampled_from(
    [
        Fault.drop(),
        Fault.drop(applied=True),
        Fault.server_error(502, html=True, applied=True),
        Fault.server_error(503),
        Fault.server_error(500, echo_headers=True),
        Fault.rate_limit(retry_after_ms=20),
        Fault.rate_limit(retry_after=0),
        Fault.hang(0.6),
        Fault.hang(0.6, applied=True),
        Fault.hang(),
        Fault.latency(0.1),
        Fault.insufficient_quota(),
    ]
)


@settings(max_examples=60)
@given(
    resource=st.sampled_from([BATCH, THREAD_RUN]),
    faults=st.lists(st.tuples(FAULTS, st.sampled_from(["GET", "POST"])), max_size=6),
    retries=st.integers(min_value=0, max_value=3),
    cancel_delay=st.floats(min_value=0.0, max_value=2.5),
    wait_sec=st.floats(min_value=0.2, max_value=1.5),
)
def test_a_cancel_and_its_wait_under_any_faults(
    emulator: OpenAIEmulator,
    said: Records,
    capfd: pytest.CaptureFixture[str],
    resource: CancellableResource,
    faults: list[tuple[Fault, str]],
    retries: int,
    cancel_delay: float,
    wait_sec: float,
) -> None:
    fresh(emulator, said, capfd)
    emulator.cancel_delay = cancel_delay
    if resource is BATCH:
        ids = {"batch_id": str(emulator.create_batch()["id"])}
    else:
        run = emulator.create_thread_run()
        ids = {"thread_id": str(run["thread_id"]), "run_id": str(run["id"])}
    for fault, method in faults:
        emulator.add_fault(fault, method=method)
    hook = PSOpenAIHook(max_retry_count=retries, timeout_sec=0.4)

    async def cancel_and_wait() -> tuple[object, object, float]:
        try:
            cancelled: object = await hook.acancel_object(resource, ids)
        except Exception as error:
            cancelled = error
        deadline = Deadline.after(wait_sec)
        event = await wait_until_settled(
            hook,
            resource,
            ids,
            poll_interval=0.1,
            deadline=deadline,
            deadline_name="the deadline",
            log=logging.getLogger("w"),
        )
        assert deadline.at is not None
        return cancelled, event, time.time() - deadline.at

    try:
        cancelled, event, overrun = asyncio.run(cancel_and_wait())
    finally:
        asyncio.run(aclose_shared_clients())
    assert_only_our_errors([cancelled])
    assert overrun < LAST_POLL_SEC + DEADLINE_SLACK_SEC
    check_event(event, resource, ids)
    effective = [e for e in emulator.requests(method="POST") if e.applied or (e.status or 0) // 100 == 2]
    assert len(effective) <= 1
    history = [status for _, status in emulator.status_history(next(reversed(ids.values())))]
    assert history.count("cancelling") <= 1
    assert_no_key(said, capfd, cancelled, json.dumps(event))
