"""The objects the emulator serves, as records that render to the API's JSON and move through a cancel.

A record keeps the times its statuses began; what the API shows (timestamps, request counts, files)
is worked out from them when rendered.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

from airflow_psopenai.resources import BATCH, CANCELLED, RESPONSE, THREAD_RUN

#: How fast an ``in_progress`` batch works through its requests.
BATCH_REQUESTS_PER_SECOND = 5.0
BATCH_WINDOW_SECONDS = 24 * 3600
RUN_EXPIRY_SECONDS = 600
CANCELLING = "cancelling"


def new_id(prefix: str, hex_chars: int = 24) -> str:
    """Return a random ID such as ``batch_`` + hex digits."""
    return prefix + secrets.token_hex(hex_chars // 2)


def _timestamp(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass
class TrackedObject:
    """State common to every object: its status, its history and a pending end of a cancel."""

    id: str
    status: str
    created: float
    race_to: str | None
    seq: int
    history: list[tuple[float, str]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    settle_at: float | None = None

    def change(self, status: str, at: float) -> None:
        """Move to ``status`` at time ``at`` and record it."""
        self.status = status
        self.history.append((at, status))

    def request_cancel(self, now: float, delay: float) -> None:
        """Move to ``cancelling`` now, to settle ``delay`` seconds later."""
        self.times["cancelling_at"] = now
        self.settle_at = now + delay
        self.change(CANCELLING, now)

    def settle(self, now: float) -> None:
        """Apply the end of a cancel once its time has come (the time it happened, not ``now``)."""
        if self.status == CANCELLING and self.settle_at is not None and now >= self.settle_at:
            self.finish(self.race_to or CANCELLED, self.settle_at)

    def finish(self, status: str, at: float) -> None:
        """End in ``status`` at time ``at``."""
        self.times[f"{status}_at"] = at
        self.change(status, at)


@dataclass(frozen=True)
class BatchSchedule:
    """How a batch moves on by itself; without one, a batch stays in the status it was created in.

    :param complete_after: Seconds from ``in_progress`` until every request is done; its request counts
        grow evenly until then, and it goes through ``finalizing`` to ``completed``. None: it never
        completes (its counts grow by 5 requests a second, as without a schedule).
    :param finalize_seconds: Seconds in ``finalizing`` before ``completed``.
    :param validate_seconds: Seconds a batch created ``validating`` takes to be ``in_progress``.
    :param window_seconds: The completion window: a batch not done by then (seconds from its creation)
        ``expired``, with the requests it did.
    :raises ValueError: For a negative or infinite number of seconds.
    """

    complete_after: float | None = None
    finalize_seconds: float = 0.0
    validate_seconds: float = 0.0
    window_seconds: float = BATCH_WINDOW_SECONDS

    def __post_init__(self) -> None:
        for name in ("complete_after", "finalize_seconds", "validate_seconds", "window_seconds"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0 <= value < math.inf):
                raise ValueError(f"BatchSchedule.{name} must be a finite number of seconds >= 0, not {value!r}.")

    def to_json(self) -> dict[str, float | None]:
        """Return the schedule as the admin API takes and shows it."""
        return {
            "complete_after": self.complete_after,
            "finalize_seconds": self.finalize_seconds,
            "validate_seconds": self.validate_seconds,
            "window_seconds": self.window_seconds,
        }


@dataclass
class BatchObject(TrackedObject):
    endpoint: str = "/v1/chat/completions"
    input_file_id: str = ""
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    total: int = 0
    # Requests done when processing stopped; None while the batch still works.
    done_frozen: int | None = None
    output_file_id: str = field(default_factory=lambda: new_id("file-", 22))
    schedule: BatchSchedule | None = None

    def done(self, now: float) -> int:
        """Return how many requests the batch has processed by ``now``."""
        if self.done_frozen is not None:
            return self.done_frozen
        if self.status in ("finalizing", "completed"):
            return self.total
        started = self.times.get("in_progress_at")
        if self.status != "in_progress" or started is None:
            return 0
        elapsed = max(0.0, now - started)
        if self.schedule is not None and self.schedule.complete_after is not None:
            if elapsed >= self.schedule.complete_after:
                return self.total
            return math.floor(self.total * elapsed / self.schedule.complete_after)
        return min(self.total, math.floor(elapsed * BATCH_REQUESTS_PER_SECOND))

    def settle(self, now: float) -> None:
        """Apply the end of a cancel, then what the schedule says has happened by ``now``, each at its time."""
        super().settle(now)
        if self.schedule is not None:
            self._follow_schedule(self.schedule, now)

    def _follow_schedule(self, schedule: BatchSchedule, now: float) -> None:
        expires = self.created + schedule.window_seconds
        if self.status == "validating" and now >= (at := self.created + schedule.validate_seconds) and at < expires:
            self.times["in_progress_at"] = at
            self.change("in_progress", at)
        if self.status == "in_progress" and schedule.complete_after is not None:
            at = self.times.get("in_progress_at", self.created) + schedule.complete_after
            if now >= at and at < expires:
                self.times["finalizing_at"] = at
                self.change("finalizing", at)
        if self.status == "finalizing" and schedule.complete_after is not None:
            at = self.times.get("finalizing_at", self.created) + schedule.finalize_seconds
            if now >= at:
                TrackedObject.finish(self, "completed", at)
        if self.status in ("validating", "in_progress") and now >= expires:
            self.done_frozen = self.done(expires)
            self.finish("expired", expires)

    def fail(self, now: float) -> None:
        """Fail now, with the requests done so far (a batch that has not ended yet)."""
        self.done_frozen = self.done(now)
        self.finish("failed", now)

    def request_cancel(self, now: float, delay: float) -> None:
        # A cancelled batch stops taking up requests at once; its counts show how far it got.
        self.done_frozen = self.done(now)
        super().request_cancel(now, delay)

    def finish(self, status: str, at: float) -> None:
        if status == "completed":
            # The cancel lost the race: every request was done.
            self.times["finalizing_at"] = at
            self.done_frozen = self.total
        super().finish(status, at)

    def render(self, now: float) -> dict[str, object]:
        """Return the object as the API shows it at ``now``."""
        done = self.done(now)
        has_output = self.status == "completed" or (self.status in (CANCELLED, "expired") and done > 0)
        # The API counts requests only once validation passed.
        counted = "in_progress_at" in self.times
        errors = None
        if self.status == "failed":
            errors = {
                "object": "list",
                "data": [
                    {
                        "code": "invalid_json_line",
                        "message": "This line is not parseable as valid JSON.",
                        "param": None,
                        "line": 1,
                    }
                ],
            }
        return {
            "id": self.id,
            "object": BATCH.object_type,
            "endpoint": self.endpoint,
            "model": "gpt-4o-mini-2024-07-18",
            "errors": errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id if has_output else None,
            "error_file_id": None,
            "created_at": int(self.created),
            "in_progress_at": _timestamp(self.times.get("in_progress_at")),
            "expires_at": int(self.created + (self.schedule or BatchSchedule()).window_seconds),
            "finalizing_at": _timestamp(self.times.get("finalizing_at")),
            "completed_at": _timestamp(self.times.get("completed_at")),
            "failed_at": _timestamp(self.times.get("failed_at")),
            "expired_at": _timestamp(self.times.get("expired_at")),
            "cancelling_at": _timestamp(self.times.get("cancelling_at")),
            "cancelled_at": _timestamp(self.times.get("cancelled_at")),
            "request_counts": {"total": self.total if counted else 0, "completed": done, "failed": 0},
            "metadata": self.metadata,
        }


@dataclass
class RunObject(TrackedObject):
    thread_id: str = ""
    assistant_id: str = field(default_factory=lambda: new_id("asst_"))
    call_id: str = field(default_factory=lambda: new_id("call_"))

    def render(self, now: float) -> dict[str, object]:
        """Return the object as the API shows it at ``now``."""
        status = self.status
        settled = status in THREAD_RUN.settled
        required_action = None
        if status == "requires_action":
            call = {"id": self.call_id, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
            required_action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [call]}}
        return {
            "id": self.id,
            "object": THREAD_RUN.object_type,
            "created_at": int(self.created),
            "assistant_id": self.assistant_id,
            "thread_id": self.thread_id,
            "status": status,
            "started_at": _timestamp(self.times.get("started_at")),
            "expires_at": None if settled and status != "expired" else int(self.created + RUN_EXPIRY_SECONDS),
            "cancelled_at": _timestamp(self.times.get("cancelled_at")),
            "failed_at": _timestamp(self.times.get("failed_at")),
            "completed_at": _timestamp(self.times.get("completed_at")),
            "required_action": required_action,
            "last_error": (
                {"code": "server_error", "message": "Sorry, something went wrong."} if status == "failed" else None
            ),
            "model": "gpt-4o",
            "instructions": "You are a helpful assistant.",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "lookup",
                        "description": "Look something up.",
                        "parameters": {"type": "object", "properties": {}},
                    },
                }
            ],
            "metadata": {},
            "incomplete_details": {"reason": "max_completion_tokens"} if status == "incomplete" else None,
            "usage": ({"prompt_tokens": 120, "completion_tokens": 35, "total_tokens": 155} if settled else None),
            "temperature": 1.0,
            "top_p": 1.0,
            "max_prompt_tokens": None,
            "max_completion_tokens": None,
            "truncation_strategy": {"type": "auto", "last_messages": None},
            "response_format": "auto",
            "tool_choice": "auto",
            "parallel_tool_calls": True,
        }


@dataclass
class ResponseObject(TrackedObject):
    background: bool = True

    def render(self, now: float) -> dict[str, object]:
        """Return the object as the API shows it at ``now``."""
        status = self.status
        finished = status in ("completed", "incomplete")
        usage = None
        if finished:
            usage = {
                "input_tokens": 36,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 87,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 123,
            }
        return {
            "id": self.id,
            "object": RESPONSE.object_type,
            "created_at": int(self.created),
            "status": status,
            "background": self.background,
            "completed_at": _timestamp(self.times.get("completed_at")),
            "error": (
                {"code": "server_error", "message": "The model failed to generate a response."}
                if status == "failed"
                else None
            ),
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": None,
            "max_output_tokens": None,
            "max_tool_calls": None,
            "model": "gpt-4o-2024-08-06",
            "output": [],
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": None,
            "service_tier": "auto",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        }


# What an object created directly in a status has already been through.
BATCH_TIMES_AT_CREATION = {
    "in_progress": ("in_progress_at",),
    "finalizing": ("in_progress_at", "finalizing_at"),
    "completed": ("in_progress_at", "finalizing_at", "completed_at"),
    "failed": ("failed_at",),
    "expired": ("in_progress_at", "expired_at"),
    CANCELLING: ("in_progress_at",),
    CANCELLED: ("in_progress_at", "cancelling_at", "cancelled_at"),
}
