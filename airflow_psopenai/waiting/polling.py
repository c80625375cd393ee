"""How every wait polls: the delays between polls, its limit, and logging each status change once.

Used by the operators' wait in the worker, by the sensors and by the trigger, so that all three
report the same way. Light (the standard library and this provider's exceptions): operators import
it at DAG-parse time.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow_psopenai.client.deadline import usable_server_delay
from airflow_psopenai.client.validation import as_seconds
from airflow_psopenai.resources import status_of

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from datetime import timedelta

    from airflow_psopenai.resources import CancellableResource

# The first polls come sooner than the interval: a cancel often settles within a second.
FIRST_POLL_DELAYS = (0.25, 0.5)
# How messages name a deadline that came without a name (a sensor's, a trigger's stored without one).
UNNAMED_DEADLINE = "the deadline"


def log_status(log: Any, target: str, status: str, after: float | None, what_ran: str = "") -> None:
    """Log an object's status and the seconds since its wait began: the line of each change, and the outcome.

    :param after: The seconds since the wait began; None when unknown (an event of format 1).
    :param what_ran: For a settled object, what it says ran (``CancellableResource.what_ran``).
    """
    ran = f" What ran: {what_ran}." if what_ran else ""
    if after is None:
        log.info("%s is %s.%s", target, status, ran)
    else:
        log.info("%s is %s (after %.1f s).%s", target, status, after, ran)


def outcome_of(resource: CancellableResource, obj: Mapping[str, Any]) -> str:
    """Return what a settled object says ran, or '' for one that is not settled."""
    return resource.what_ran(obj) if status_of(obj) in resource.settled else ""


def poll_delays(poll_interval: float) -> Iterator[float]:
    """Yield the delays between polls: a few short ones, then ``poll_interval`` for ever."""
    for delay in FIRST_POLL_DELAYS:
        if delay < poll_interval:
            yield delay
    while True:
        yield poll_interval


def wait_limit(
    wait_timeout: float | timedelta | None, timeout_sec: float, execution_timeout: timedelta | None
) -> tuple[float | None, str]:
    """Return how long a wait may take, in seconds, and how messages name that limit.

    ``wait_timeout``; else ``timeout_sec`` when above 0 (PSOpenAI's ``-TimeoutSec`` bounds its whole
    wait, not only each request); else ``execution_timeout``, which Airflow does not apply to a
    deferred task; else no limit.
    """
    if wait_timeout is not None:
        seconds = as_seconds(wait_timeout, "wait_timeout")
        return seconds, f"its wait_timeout of {seconds:g} s"
    if timeout_sec:
        return timeout_sec, f"its timeout_sec of {timeout_sec:g} s"
    if execution_timeout is not None:
        seconds = execution_timeout.total_seconds()
        return seconds, f"its execution_timeout of {seconds:g} s"
    return None, "the end of the wait"


def timeout_message(target: str, deadline_name: str, last_status: str | None) -> str:
    """Return the message of a wait for ``target`` that ended at ``deadline_name`` before the object settled."""
    seen = f"last status: {last_status}" if last_status else "no status could be read"
    return f"{target} did not settle before {deadline_name} ({seen})."


class StatusWatch:
    """Follow one object's status during a wait, logging each change once with the elapsed time.

    :param resource: What is watched.
    :param ids: Its IDs.
    :param log: A logger with ``info`` and ``warning``.
    :param started_at: When the wait began, in epoch seconds (a deferred wait's, from the task: a
        triggerer restart does not restart the count); default now.
    """

    def __init__(
        self, resource: CancellableResource, ids: Mapping[str, str], log: Any, started_at: float | None = None
    ) -> None:
        self.resource = resource
        self.target = resource.describe(ids)
        self.log = log
        self.started_at = time.time() if started_at is None else started_at
        self.last_status: str | None = None

    def elapsed(self) -> float:
        """Return the seconds since the wait began."""
        return max(0.0, time.time() - self.started_at)

    def observe(self, obj: Mapping[str, Any]) -> bool:
        """Record a polled object; return whether its status is settled."""
        status = status_of(obj)
        if status != self.last_status:
            log_status(self.log, self.target, status, self.elapsed(), outcome_of(self.resource, obj))
            self.last_status = status
        return status in self.resource.settled

    def timeout_message(self, deadline_name: str) -> str:
        """Return the message of a wait that ended at ``deadline_name`` before the object settled."""
        return timeout_message(self.target, deadline_name, self.last_status)

    def transient(self, error: BaseException, next_delay: float) -> float:
        """Log a transient error of a status poll; return the delay before the next poll.

        A delay the server asked for outranks the poll interval when the hook's retries would honour it too.
        """
        delay = max(next_delay, usable_server_delay(getattr(error, "retry_after", None)) or 0.0)
        self.log.warning("Polling %s failed for now, polling again in %.1f s: %s", self.target, delay, error)
        return delay
