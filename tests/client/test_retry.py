"""PSOpenAI's retry policy: what is retried, how often, and how long the hook waits in between."""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

import httpx
import pytest
from tenacity import RetryCallState, Retrying

from airflow_psopenai.client import errors as errors_module
from airflow_psopenai.client.errors import retry_after_seconds
from airflow_psopenai.client.retry import RetryPolicy, backoff_delay, is_retryable
from airflow_psopenai.exceptions import (
    PSOpenAIAPIError,
    PSOpenAIAuthenticationError,
    PSOpenAICannotCancelError,
    PSOpenAIInvalidResponseError,
    PSOpenAINotFoundError,
    PSOpenAIQuotaError,
    PSOpenAIRateLimitError,
    PSOpenAIServerError,
    PSOpenAITransportError,
)
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import Fault
from tests.connections import MockedApi, json_error, retry_waits, use_emulator

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator

pytestmark = pytest.mark.timeout(30)


def rate_limited(status: int = 429, **headers: str) -> httpx.Response:
    return json_error(status, "Rate limit reached.", "requests", "rate_limit_exceeded", headers=headers)


# The announced wait is checked exactly from the log; the gap the emulator saw between the two requests
# only has to show the hook slept that wait, not one of seconds more (a delay read in the wrong unit):
# this much on top leaves room for a loaded machine.
GAP_SLACK_SEC = 1.5


def gap(emulator: OpenAIEmulator, first: int = 0) -> float:
    """Return the seconds between journal entries ``first`` and ``first + 1``."""
    journal = emulator.journal
    return journal[first + 1].time - journal[first].time


def statuses(emulator: OpenAIEmulator) -> list[int | None]:
    return [entry.status for entry in emulator.journal]


# -- backoff_delay ------------------------------------------------------------------------------------


@pytest.mark.parametrize("server_delay", [0.001, 0.05, 1.5, 59.9, 60.0])
def test_backoff_delay_uses_server_delay_above_0_up_to_60_seconds(server_delay: float) -> None:
    assert backoff_delay(1, server_delay) == server_delay
    assert backoff_delay(5, server_delay) == server_delay


# retry-after: 0 is no delay at all (PSOpenAI's rule): the backoff applies.
@pytest.mark.parametrize("server_delay", [0.0, 60.001, 61.0, 120.0, 3600.0, -0.5, -30.0, math.inf, math.nan])
def test_backoff_delay_falls_back_to_exponential_backoff_for_server_delay_out_of_range(server_delay: float) -> None:
    for retry_number in (1, 2, 3):
        delay = backoff_delay(retry_number, server_delay, random.Random(retry_number))
        base = 2 ** (retry_number - 1)
        assert 0.8 * base <= delay <= 1.2 * base


@pytest.mark.parametrize("retry_number", [1, 2, 3, 4, 5, 6, 7])
def test_backoff_delay_doubles_with_jitter_from_0_8_to_1_2(retry_number: int) -> None:
    base = 2 ** (retry_number - 1)
    rng = random.Random(retry_number)
    delays = [backoff_delay(retry_number, None, rng) for _ in range(400)]
    assert all(0.8 * base <= delay <= 1.2 * base for delay in delays)
    # The jitter really spreads the delays over the whole range.
    assert min(delays) < 0.82 * base
    assert max(delays) > 1.18 * base


def test_backoff_delay_draws_its_jitter_between_0_8_and_1_2() -> None:
    drawn: list[tuple[float, float]] = []

    class Recorder(random.Random):
        def uniform(self, a: float, b: float) -> float:
            drawn.append((a, b))
            return b

    assert backoff_delay(3, None, Recorder()) == pytest.approx(4 * 1.2)
    assert drawn == [(0.8, 1.2)]


class FixedJitter(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def uniform(self, a: float, b: float) -> float:
        return self.value


def test_backoff_delay_is_capped_at_129_seconds() -> None:
    assert backoff_delay(8, None, FixedJitter(0.8)) == pytest.approx(102.4)  # 128 * 0.8: under the cap
    assert backoff_delay(8, None, FixedJitter(1.0)) == pytest.approx(128.0)
    assert backoff_delay(8, None, FixedJitter(1.2)) == 129.0  # 153.6 capped
    assert backoff_delay(9, None, FixedJitter(0.8)) == 129.0
    for retry_number in (10, 50, 100):
        assert backoff_delay(retry_number, None) == 129.0
    assert backoff_delay(100, 3600.0) == 129.0


# -- retry-after headers -------------------------------------------------------------------------------


def test_retry_after_ms_header_is_read_in_milliseconds() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == pytest.approx(0.25)


def test_retry_after_header_is_read_in_seconds() -> None:
    assert retry_after_seconds(httpx.Headers({"retry-after": "7"})) == 7.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "0.5"})) == 0.5


def test_retry_after_http_date_is_read_relative_to_now() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"retry-after": date}), now=now) == pytest.approx(42.0)
    past = email.utils.formatdate(now - 10, usegmt=True)
    assert retry_after_seconds(httpx.Headers({"retry-after": past}), now=now) == pytest.approx(-10.0)


def test_retry_after_ms_wins_over_retry_after() -> None:
    headers = httpx.Headers({"retry-after-ms": "20", "retry-after": "30"})
    assert retry_after_seconds(headers) == pytest.approx(0.02)


def test_retry_after_unreadable_values_are_ignored() -> None:
    assert retry_after_seconds(httpx.Headers({})) is None
    assert retry_after_seconds(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "soon", "retry-after": "3"})) == 3.0


# -- the policy's wait, with tenacity's state ---------------------------------------------------------


def state_after(error: BaseException, attempt_number: int) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt_number
    state.set_exception((type(error), error, None))
    return state


def rate_limit_error(retry_after: float | None) -> PSOpenAIRateLimitError:
    return PSOpenAIRateLimitError("rate limited", http_status=429, retryable=True, retry_after=retry_after)


@pytest.mark.parametrize("retry_after", [0.2, 5.0, 60.0])
def test_policy_waits_the_server_delay_up_to_60_seconds(retry_after: float) -> None:
    wait = RetryPolicy.next_delay
    assert wait(state_after(rate_limit_error(retry_after), 1)) == retry_after


@pytest.mark.parametrize("retry_after", [None, 0.0, 61.0, 120.0, -1.0])
def test_policy_waits_exponential_backoff_without_usable_server_delay(retry_after: float | None) -> None:
    wait = RetryPolicy.next_delay
    assert 0.8 <= wait(state_after(rate_limit_error(retry_after), 1)) <= 1.2
    assert 1.6 <= wait(state_after(rate_limit_error(retry_after), 2)) <= 2.4
    assert 3.2 <= wait(state_after(rate_limit_error(retry_after), 3)) <= 4.8


def test_policy_waits_backoff_after_a_transport_error() -> None:
    wait = RetryPolicy.next_delay
    assert 1.6 <= wait(state_after(PSOpenAITransportError("connection reset"), 2)) <= 2.4


def test_is_retryable_follows_the_errors_flag() -> None:
    assert is_retryable(PSOpenAITransportError("dropped"))
    assert is_retryable(rate_limit_error(None))
    assert not is_retryable(PSOpenAIAPIError("refused", http_status=400))
    assert not is_retryable(ValueError("not an API error"))


# -- Retry-After against the emulator ------------------------------------------------------------------


def test_retry_after_ms_is_the_wait_before_the_retry(
    emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.rate_limit(retry_after_ms=150))
    assert PSOpenAIHook(max_retry_count=1).get_batch(batch["id"])["id"] == batch["id"]
    assert statuses(emulator) == [429, 200]
    assert retry_waits(capfd, caplog) == [(0.15, 2, 2)]
    assert 0.14 <= gap(emulator) < 0.15 + GAP_SLACK_SEC


def test_retry_after_seconds_is_the_wait_before_the_retry(
    emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.rate_limit(retry_after=0.3))
    assert PSOpenAIHook(max_retry_count=1).get_batch(batch["id"])["id"] == batch["id"]
    assert statuses(emulator) == [429, 200]
    assert retry_waits(capfd, caplog) == [(0.3, 2, 2)]
    assert 0.29 <= gap(emulator) < 0.3 + GAP_SLACK_SEC


def test_retry_after_http_date_is_the_wait_before_the_retry(
    emulator: OpenAIEmulator,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch = emulator.create_batch()
    # The hook's clock reads 1.5 s before the date, however long the request took: the wait is exactly
    # 1.5 s, which no backoff (2^0 s with jitter, 0.8 to 1.2 s) gives, so the date was read.
    when = math.floor(time.time()) + 30
    monkeypatch.setattr(errors_module, "time", SimpleNamespace(time=lambda: when - 1.5))
    emulator.add_fault(Fault.rate_limit(retry_after=email.utils.formatdate(when, usegmt=True)))
    assert PSOpenAIHook(max_retry_count=1).get_batch(batch["id"])["id"] == batch["id"]
    assert statuses(emulator) == [429, 200]
    assert retry_waits(capfd, caplog) == [(1.5, 2, 2)]
    assert 1.48 <= gap(emulator) < 1.5 + GAP_SLACK_SEC


def test_retry_after_ms_wins_over_retry_after_seconds(
    emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.rate_limit(retry_after=30, retry_after_ms=50))
    assert PSOpenAIHook(max_retry_count=1).get_batch(batch["id"])["id"] == batch["id"]
    assert retry_waits(capfd, caplog) == [(0.05, 2, 2)]
    assert gap(emulator) < 0.05 + GAP_SLACK_SEC  # not 30 s


@pytest.mark.timeout(15)
def test_server_delay_over_60_seconds_falls_back_to_exponential_backoff(
    emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.rate_limit(retry_after=120))
    assert PSOpenAIHook(max_retry_count=1).get_batch(batch["id"])["id"] == batch["id"]
    [(waited, attempt, attempts)] = retry_waits(capfd, caplog)
    assert (attempt, attempts) == (2, 2)
    assert 0.8 <= waited <= 1.2  # 2^0 s with jitter, not 120 s
    assert 0.75 <= gap(emulator) < 1.2 + GAP_SLACK_SEC


# -- x-should-retry --------------------------------------------------------------------------------------


def test_should_retry_true_makes_a_409_cancel_refusal_retried(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    batch = emulator.create_batch(status="completed")
    # A latency fault of 0 s keeps the real answer and adds the header to it.
    emulator.add_fault(Fault.latency(0, should_retry=True), method="POST", path="/v1/batches/*/cancel")
    with pytest.raises(PSOpenAICannotCancelError):
        PSOpenAIHook(max_retry_count=3).cancel_batch(batch["id"])
    # Retried once because of the header; the second 409 came without it and ended the call.
    assert statuses(emulator) == [409, 409]


def test_should_retry_true_makes_a_404_retried(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    emulator.add_fault(Fault.latency(0, should_retry=True), times=2)
    with pytest.raises(PSOpenAINotFoundError):
        PSOpenAIHook(max_retry_count=5).get_batch("batch_missing")
    assert statuses(emulator) == [404, 404, 404]


def test_should_retry_false_stops_a_503_from_being_retried(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.server_error(503, should_retry=False), times=3)
    with pytest.raises(PSOpenAIServerError) as raised:
        PSOpenAIHook(max_retry_count=3).get_batch(batch["id"])
    assert raised.value.http_status == 503
    assert raised.value.retryable is False
    assert statuses(emulator) == [503]


def test_should_retry_false_stops_a_rate_limit_from_being_retried(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.rate_limit(retry_after_ms=1, should_retry=False), times=3)
    with pytest.raises(PSOpenAIRateLimitError):
        PSOpenAIHook(max_retry_count=3).get_batch(batch["id"])
    assert statuses(emulator) == [429]


# -- answers that are never retried ------------------------------------------------------------------------


def _quota(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[PSOpenAIHook], object]:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.insufficient_quota(), times=5)
    return lambda hook: hook.get_batch(batch["id"])


def _bad_key(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[PSOpenAIHook], object]:
    batch = emulator.create_batch()
    use_emulator(monkeypatch, emulator, password="sk-wrong-key-0123456789abcdef")
    return lambda hook: hook.get_batch(batch["id"])


def _unknown_batch(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[PSOpenAIHook], object]:
    return lambda hook: hook.get_batch("batch_does_not_exist")


def _completed_batch(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[PSOpenAIHook], object]:
    batch = emulator.create_batch(status="completed")
    return lambda hook: hook.cancel_batch(batch["id"])


def _completed_run(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> Callable[[PSOpenAIHook], object]:
    run = emulator.create_thread_run(status="completed")
    return lambda hook: hook.cancel_thread_run(run["thread_id"], run["id"])


@pytest.mark.parametrize(
    ("scenario", "status", "error"),
    [
        (_quota, 429, PSOpenAIQuotaError),
        (_bad_key, 401, PSOpenAIAuthenticationError),
        (_unknown_batch, 404, PSOpenAINotFoundError),
        (_completed_batch, 409, PSOpenAICannotCancelError),
        (_completed_run, 400, PSOpenAICannotCancelError),
    ],
    ids=["quota-429", "401", "404", "409", "400"],
)
def test_non_retryable_answers_are_sent_once(
    emulator: OpenAIEmulator,
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[..., Callable[[PSOpenAIHook], object]],
    status: int,
    error: type[Exception],
) -> None:
    call = scenario(emulator, monkeypatch)
    with pytest.raises(error):
        call(PSOpenAIHook(max_retry_count=5))
    assert statuses(emulator) == [status]


# -- 5xx and dropped connections ------------------------------------------------------------------------


FAILURES = {
    "500": (Fault.server_error(500), PSOpenAIServerError, 500),
    "502-html": (Fault.server_error(502, html=True), PSOpenAIServerError, 502),
    "503": (Fault.server_error(503), PSOpenAIServerError, 503),
    "drop": (Fault.drop(), PSOpenAITransportError, None),
}


@pytest.mark.parametrize("max_retry_count", [1, 3])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_failures_are_retried_up_to_max_retry_count_and_no_further(
    emulator: OpenAIEmulator,
    fast_backoff: None,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    failure: str,
    max_retry_count: int,
) -> None:
    fault, error, status = FAILURES[failure]
    batch = emulator.create_batch()
    emulator.add_fault(fault, times=20)
    with pytest.raises(error) as raised:
        PSOpenAIHook(max_retry_count=max_retry_count).get_batch(batch["id"])
    assert len(emulator.journal) == max_retry_count + 1
    assert statuses(emulator) == [status] * (max_retry_count + 1)
    if status is not None:
        assert isinstance(raised.value, PSOpenAIServerError)
        assert raised.value.http_status == status
    attempts = [(attempt, total) for _, attempt, total in retry_waits(capfd, caplog)]
    assert attempts == [(n, max_retry_count + 1) for n in range(2, max_retry_count + 2)]


@pytest.mark.parametrize("failure", list(FAILURES))
def test_success_after_fewer_failures_than_the_limit(
    emulator: OpenAIEmulator, fast_backoff: None, failure: str
) -> None:
    fault, _, status = FAILURES[failure]
    batch = emulator.create_batch()
    emulator.add_fault(fault, times=2)
    assert PSOpenAIHook(max_retry_count=3).get_batch(batch["id"])["id"] == batch["id"]
    assert statuses(emulator) == [status, status, 200]


def test_cancel_is_retried_after_a_server_error(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.server_error(500), method="POST", times=1)
    assert PSOpenAIHook(max_retry_count=2).cancel_batch(batch["id"])["status"] == "cancelling"
    # A 5xx may come after the API acted: the retry looks at the batch before it sends the cancel again.
    assert [(entry.method, entry.status) for entry in emulator.journal] == [("POST", 500), ("GET", 200), ("POST", 200)]


def test_default_max_retry_count_sends_once(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.server_error(500), times=5)
    with pytest.raises(PSOpenAIServerError):
        PSOpenAIHook().get_batch(batch["id"])
    assert statuses(emulator) == [500]


def test_create_batch_is_not_retried(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    emulator.add_fault(Fault.server_error(500), method="POST", path="/v1/batches", times=5)
    with pytest.raises(PSOpenAIServerError):
        PSOpenAIHook(max_retry_count=3).create_batch("file-abc")
    assert statuses(emulator) == [500]


# -- max_retry_count range -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 101, 1000, "x", "", 1.5, True, False, None, [1]])
def test_max_retry_count_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="max_retry_count"):
        RetryPolicy(value, logging.getLogger(__name__))  # type: ignore[arg-type]
    if value is not None:  # None means "not given" for the hook
        with pytest.raises(ValueError, match="max_retry_count"):
            PSOpenAIHook(max_retry_count=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (100, 100), (7, 7), ("3", 3), (2.0, 2)])
def test_max_retry_count_in_range_is_accepted(emulator: OpenAIEmulator, value: object, expected: int) -> None:
    hook = PSOpenAIHook(max_retry_count=value)  # type: ignore[arg-type]
    assert hook.settings.max_retry_count == expected
    assert hook.retry_policy.max_retry_count == expected


def test_max_retry_count_100_retries_as_often_as_needed(emulator: OpenAIEmulator, fast_backoff: None) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.server_error(500), times=6)
    assert PSOpenAIHook(max_retry_count=100).get_batch(batch["id"])["id"] == batch["id"]
    assert statuses(emulator) == [500] * 6 + [200]


# -- the retry table on narrow answers (MockTransport) ----------------------------------------------------


RETRY_TABLE = {
    "empty-500": (lambda: httpx.Response(500), True, PSOpenAIServerError),
    "empty-502": (lambda: httpx.Response(502, content=b""), True, PSOpenAIServerError),
    "html-504": (
        lambda: httpx.Response(504, text="<html>Gateway Time-out</html>", headers={"content-type": "text/html"}),
        True,
        PSOpenAIServerError,
    ),
    "rate-limit-429": (lambda: rate_limited(**{"retry-after-ms": "1"}), True, PSOpenAIRateLimitError),
    "rate-limit-429-no-delay": (rate_limited, True, PSOpenAIRateLimitError),
    "quota-code-429": (
        lambda: json_error(429, "You exceeded your current quota.", "insufficient_quota", "insufficient_quota"),
        False,
        PSOpenAIQuotaError,
    ),
    "quota-type-only-429": (
        lambda: json_error(429, "You exceeded your current quota.", "insufficient_quota", None),
        False,
        PSOpenAIQuotaError,
    ),
    "empty-400": (lambda: httpx.Response(400), False, PSOpenAIInvalidResponseError),
    "json-400": (lambda: json_error(400, "Bad request."), False, PSOpenAIAPIError),
    "json-403": (lambda: json_error(403, "Forbidden.", code="unsupported_country_region_territory"), False, None),
    "json-408": (lambda: json_error(408, "Request timeout."), False, PSOpenAIAPIError),
    "json-409": (lambda: json_error(409, "Conflict."), False, PSOpenAIAPIError),
    "json-422": (lambda: json_error(422, "Unprocessable."), False, PSOpenAIAPIError),
    "should-retry-true-400": (
        lambda: json_error(400, "Try again.", headers={"x-should-retry": "true"}),
        True,
        PSOpenAIAPIError,
    ),
    "should-retry-true-409": (
        lambda: json_error(409, "Conflict.", headers={"x-should-retry": "True"}),
        True,
        PSOpenAIAPIError,
    ),
    "should-retry-false-500": (
        lambda: json_error(500, "Broken.", "server_error", headers={"x-should-retry": "false"}),
        False,
        PSOpenAIServerError,
    ),
    "should-retry-false-429": (
        lambda: rate_limited(**{"retry-after-ms": "1", "x-should-retry": "false"}),
        False,
        PSOpenAIRateLimitError,
    ),
    "should-retry-garbage-500": (
        lambda: json_error(500, "Broken.", "server_error", headers={"x-should-retry": "maybe"}),
        True,
        PSOpenAIServerError,
    ),
}


@pytest.mark.parametrize("case", list(RETRY_TABLE))
def test_retry_table(monkeypatch: pytest.MonkeyPatch, fast_backoff: None, case: str) -> None:
    answer, retried, error = RETRY_TABLE[case]
    api = MockedApi(monkeypatch, lambda request: answer(), max_retry_count=2)
    with pytest.raises(error or PSOpenAIAPIError) as raised:
        api.hook.get_batch("batch_1")
    assert len(api.requests) == (3 if retried else 1)
    assert isinstance(raised.value, PSOpenAIAPIError)
    assert raised.value.retryable is retried


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, 0.5), (0.0, 0.5), (0.2, 0.5), (5.0, 5.0), (60.0, 60.0), (61.0, 0.5), (3600.0, 0.5)],
)
def test_a_wait_uses_the_server_delay_by_the_hooks_rule(retry_after: float | None, expected: float) -> None:
    """A poll's server delay counts as the hook's does: above 0 up to 60 s, else the wait's own delay applies."""
    from airflow_psopenai.resources import BATCH
    from airflow_psopenai.waiting.polling import StatusWatch

    watch = StatusWatch(BATCH, {"batch_id": "batch_1"}, logging.getLogger("test"))
    assert watch.transient(rate_limit_error(retry_after), next_delay=0.5) == expected
