"""Shared logic of every wait for a status: poll delays, logging each change once, event checks.

Used by the operators' wait in the worker, by the sensors and by the trigger, so that all three
report the same way. Light (the standard library and this provider's exceptions): operators import
it at DAG-parse time.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIEventError
from airflow_psopenai.resources import RESOURCES, CancellableResource

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

# The seed honours a server-requested delay above 0 and up to a minute; otherwise its own delay applies.
MAX_SERVER_DELAY_SEC = 60.0
# The first polls come sooner than the interval: a cancel often settles within a second.
FIRST_POLL_DELAYS = (0.25, 0.5)
# A poll made at the deadline may take this long; a hanging server holds a wait no longer past it.
LAST_POLL_SEC = 1.0

EVENT_SETTLED = "settled"
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
EVENT_STATUSES = (EVENT_SETTLED, EVENT_TIMEOUT, EVENT_ERROR)


def usable_server_delay(seconds: float | None) -> float | None:
    """Return the delay a server asked for (``retry-after``) if the seed honours it: above 0, up to 60 s.

    ``retry-after: 0`` asks for nothing, and a longer delay than a minute is not waited for: the
    hook's retries and the waits then both use their own delay.
    """
    if seconds is not None and 0 < seconds <= MAX_SERVER_DELAY_SEC:
        return seconds
    return None


def poll_delays(poll_interval: float) -> Iterator[float]:
    """Yield the delays between polls: a few short ones, then ``poll_interval`` for ever."""
    for delay in FIRST_POLL_DELAYS:
        if delay < poll_interval:
            yield delay
    while True:
        yield poll_interval


def as_seconds(value: float | timedelta | None, argument: str) -> float | None:
    """Return a duration given in seconds or as a timedelta, in seconds (None stays None).

    :raises ValueError: Naming ``argument``, for anything but a number or timedelta of 0 or more.
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise PSOpenAIConfigurationError(
            f"{argument} must be a number of seconds (0 or more) or a timedelta, got {value!r}."
        )
    return seconds


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


class Deadline:
    """When a wait ends: an absolute time in epoch seconds (so it survives a triggerer restart), or never.

    A wait polls once more at its deadline, so an object that settled just before it is not
    reported as a timeout.

    :param at: Epoch seconds, or None for no deadline.
    """

    def __init__(self, at: float | None) -> None:
        self.at = at

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """Return the deadline ``seconds`` from now (None: no deadline)."""
        return cls(None if seconds is None else time.time() + seconds)

    def passed(self) -> bool:
        """Return whether the deadline has come."""
        return self.at is not None and time.time() >= self.at

    def allows(self, delay: float) -> bool:
        """Return whether something started ``delay`` seconds from now would still start before the deadline."""
        return self.at is None or time.time() + delay < self.at

    def sleep_before_poll(self, delay: float) -> float:
        """Return ``delay``, cut short so that a poll happens at the deadline."""
        return delay if self.at is None else max(0.0, min(delay, self.at - time.time()))

    def poll_limit(self) -> float | None:
        """Return how long one call may take: until the deadline, or ``LAST_POLL_SEC`` for the one made at it.

        Every call made inside a wait, and each of its retries, is limited by this, so that a hanging
        server or the hook's own backoff cannot hold a wait past its deadline.
        """
        return None if self.at is None else max(self.at - time.time(), LAST_POLL_SEC)


NO_DEADLINE = Deadline(None)


def status_of(obj: Mapping[str, Any]) -> str:
    """Return an object's status, normalised (lower case)."""
    return CancellableResource.normalise_status(obj.get("status"))


class StatusWatch:
    """Follow one object's status during a wait, logging each change once with the elapsed time.

    :param resource: What is watched.
    :param ids: Its IDs.
    :param log: A logger with ``info`` and ``warning``.
    """

    def __init__(self, resource: CancellableResource, ids: Mapping[str, str], log: Any) -> None:
        self.resource = resource
        self.target = resource.describe(ids)
        self.log = log
        self.started = time.monotonic()
        self.last_status: str | None = None

    def elapsed(self) -> float:
        """Return the seconds since the watch started."""
        return time.monotonic() - self.started

    def observe(self, obj: Mapping[str, Any]) -> bool:
        """Record a polled object; return whether its status is settled."""
        status = status_of(obj)
        if status != self.last_status:
            self.log.info("%s is %s (after %.1f s).", self.target, status, self.elapsed())
            self.last_status = status
        return status in self.resource.settled

    def timeout_message(self, limit: str) -> str:
        """Return the message of a wait that ended at ``limit`` before the object settled."""
        seen = f"last status: {self.last_status}" if self.last_status else "no status could be read"
        return f"{self.target} did not settle before {limit} ({seen})."

    def transient(self, error: BaseException, next_delay: float) -> float:
        """Log a transient error of a status poll; return the delay before the next poll.

        A delay the server asked for outranks the poll interval when the hook's retries would honour it too.
        """
        delay = max(next_delay, usable_server_delay(getattr(error, "retry_after", None)) or 0.0)
        self.log.warning("Polling %s failed for now, polling again in %.1f s: %s", self.target, delay, error)
        return delay


SLIM_KEYS = ("id", "object", "status")


def slim_object(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Return only an object's ``id``, ``object`` and ``status``: enough to check an event, small to store."""
    return None if obj is None else {key: obj[key] for key in SLIM_KEYS if key in obj}


def settled_event(resource: CancellableResource, ids: Mapping[str, str], obj: Mapping[str, Any]) -> dict[str, Any]:
    """Return the event that ends a wait on a settled object."""
    return {"status": EVENT_SETTLED, "resource": resource.name, "ids": dict(ids), "object": dict(obj)}


def failure_event(kind: str, message: str, obj: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return the event that ends a wait on a timeout or a permanent error."""
    return {"status": kind, "message": message, "object": dict(obj) if obj is not None else None}


def check_event(event: object, resource: CancellableResource, ids: Mapping[str, str]) -> dict[str, Any]:
    """Return a trigger event after checking it is one of ours, about this object; else raise ``PSOpenAIEventError``.

    A missing or unknown event is never taken as success.
    """
    if not isinstance(event, dict) or event.get("status") not in EVENT_STATUSES:
        raise PSOpenAIEventError(f"The trigger sent an event this task does not understand: {event!r:.300}.")
    if event["status"] != EVENT_SETTLED:
        if not isinstance(event.get("message"), str):
            raise PSOpenAIEventError(f"The trigger sent a {event['status']} event without a message: {event!r:.300}.")
        return event
    obj = event.get("object")
    if (
        RESOURCES.get(str(event.get("resource"))) is not resource
        or event.get("ids") != dict(ids)
        or not isinstance(obj, dict)
        or status_of(obj) not in resource.settled
    ):
        raise PSOpenAIEventError(
            f"The trigger sent a settled event without a settled {resource.describe(ids)}: {event!r:.300}."
        )
    return event
