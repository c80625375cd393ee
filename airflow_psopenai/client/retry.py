"""PSOpenAI's retry policy, built once from plain numbers on tenacity.

What is retried is decided where the error is built (:func:`airflow_psopenai.client.errors.error_from_response`
sets ``retryable`` and ``retry_after``); this module decides how often and how long to wait.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tenacity import AsyncRetrying, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base

from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline, usable_server_delay
from airflow_psopenai.client.validation import require_retry_count
from airflow_psopenai.exceptions import PSOpenAIAPIError, PSOpenAITransportError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from tenacity import RetryCallState

BASE_DELAY_SEC = 1.0
MAX_BACKOFF_SEC = 129.0
JITTER = (0.8, 1.2)

_T = TypeVar("_T")


class WarningLogger(Protocol):
    """Anything with a logging-style ``warning`` (stdlib or Airflow's structlog loggers)."""

    def warning(self, event: Any, /, *args: Any) -> Any: ...


def is_retryable(error: BaseException) -> bool:
    """Return whether an error is one the policy sends again (429 but quota, 5xx, transport errors)."""
    return isinstance(error, PSOpenAIAPIError | PSOpenAITransportError) and error.retryable


def backoff_delay(retry_number: int, server_delay: float | None, rng: random.Random | None = None) -> float:
    """Return the seconds to wait before retry number ``retry_number`` (1 for the first retry).

    The server's delay (``retry-after-ms`` / ``retry-after``) wins when it is above 0 and at most 60 s;
    otherwise ``2^(n-1) * 1 s * jitter(0.8..1.2)``, capped at 129 s.
    """
    if (usable := usable_server_delay(server_delay)) is not None:
        return usable
    jitter = (rng or random).uniform(*JITTER)
    return float(min(2 ** (retry_number - 1) * BASE_DELAY_SEC * jitter, MAX_BACKOFF_SEC))


class RetryPolicy:
    """How many times a failed call is sent again, and how long to wait in between.

    :param max_retry_count: Retries after the first attempt, 0 to 100 (0: the call is sent once).
    :param logger: Where each retry is announced (a warning with status, request id, delay, attempt).
    """

    def __init__(self, max_retry_count: int, logger: WarningLogger) -> None:
        self.max_retry_count = require_retry_count(max_retry_count)
        self._logger = logger
        self._attempts = stop_after_attempt(self.max_retry_count + 1)
        common = {
            "stop": self._attempts,
            "retry": retry_if_exception(is_retryable),
            "wait": self.next_delay,
            "before_sleep": self._announce,
            "reraise": True,
        }
        self._retrying = Retrying(**common)  # type: ignore[arg-type]
        self._async_retrying = AsyncRetrying(**common)  # type: ignore[arg-type]

    def call(self, attempt: Callable[[float | None], _T], deadline: Deadline = NO_DEADLINE) -> _T:
        """Run ``attempt``, and again after each retryable error, up to ``max_retry_count`` retries and the deadline.

        ``attempt`` gets the seconds it may take (None: only the connection's own timeouts). A retry
        whose delay would end past ``deadline`` is not made: the last error is raised at once.
        """
        if self.max_retry_count == 0:
            return attempt(deadline.poll_limit())  # tenacity's bookkeeping costs a poll more CPU than it saves
        return self._retrying.copy(stop=self._stop(deadline))(lambda: attempt(deadline.poll_limit()))

    async def acall(self, attempt: Callable[[float | None], Awaitable[_T]], deadline: Deadline = NO_DEADLINE) -> _T:
        """Await ``attempt``; again after each retryable error, up to ``max_retry_count`` retries and the deadline."""
        if self.max_retry_count == 0:
            return await attempt(deadline.poll_limit())

        async def limited() -> _T:  # tenacity awaits only what is a coroutine function
            return await attempt(deadline.poll_limit())

        return await self._async_retrying.copy(stop=self._stop(deadline))(limited)

    def _stop(self, deadline: Deadline) -> stop_base:
        return self._attempts if deadline.at is None else self._attempts | _StopBeforeDeadline(deadline)

    @staticmethod
    def next_delay(state: RetryCallState) -> float:
        """Return the delay before the next attempt, from the failed attempt's error and number."""
        error = state.outcome.exception() if state.outcome else None
        server_delay = getattr(error, "retry_after", None)
        return backoff_delay(state.attempt_number, server_delay)

    def _announce(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self._logger.warning(
            "Retrying after %s (HTTP status %s, request id %s): waiting %.2f s before attempt %d of %d.",
            type(error).__name__,
            getattr(error, "http_status", None) or "none",
            getattr(error, "request_id", None) or "none",
            delay,
            state.attempt_number + 1,
            self.max_retry_count + 1,
        )


class _StopBeforeDeadline(stop_base):
    """Stop retrying when the next attempt would start after the deadline (tenacity computes the delay first)."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not self.deadline.allows(retry_state.upcoming_sleep)
