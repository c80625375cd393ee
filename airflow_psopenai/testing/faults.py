"""Faults the emulator injects: error answers, latency, hangs and dropped connections.

Build faults with the classmethods of :class:`Fault`: :meth:`Fault.rate_limit`,
:meth:`Fault.insufficient_quota`, :meth:`Fault.server_error`, :meth:`Fault.answer`, :meth:`Fault.latency`,
:meth:`Fault.hang` and :meth:`Fault.drop`. :class:`FaultPlan` decides which request gets which.
"""

from __future__ import annotations

import json
import math
import random
import threading
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from html import escape
from http import HTTPStatus
from typing import TYPE_CHECKING, Literal, cast, get_args

from airflow_psopenai.testing.messages import error_reply, reply

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from starlette.responses import Response

FaultKind = Literal["rate_limit", "insufficient_quota", "server_error", "answer", "latency", "hang", "drop"]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
SERVER_ERROR_STATUSES = frozenset(status.value for status in HTTPStatus if status >= 500)

_DEFAULT_FALSE_FLAGS = ("html", "applied", "echo_headers")
_SERVER_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The server is overloaded or not ready yet.",
    504: "Gateway timeout.",
}


@dataclass(frozen=True)
class Fault:
    """One injected fault; build it with the classmethods rather than directly.

    :param kind: What happens to the request.
    :param status: HTTP status of a ``server_error``.
    :param retry_after: Seconds sent as ``retry-after`` (rate limit); a string is sent as is (an HTTP date).
    :param retry_after_ms: Milliseconds sent as ``retry-after-ms`` (rate limit).
    :param html: Answer a ``server_error`` with a proxy's HTML page instead of JSON.
    :param should_retry: When set, send ``x-should-retry: true|false`` with the answer.
    :param seconds: Added latency, or how long a hang lasts (None: until the client leaves).
    :param body: Body of an ``answer``, sent as is.
    :param content_type: Content type of an ``answer`` (default ``application/json``).
    :param headers: More response headers of an ``answer`` (``retry-after`` in any form, say), sent as is.
    :param applied: The API acts on the request first (a cancel takes effect), then the fault replaces
        its answer: a lost answer, as when a gateway times out or drops a connection after the API answered.
    :param echo_headers: A ``server_error`` page (HTML or JSON) quotes the request's headers, credentials
        included, as some proxies' error pages do.
    """

    kind: FaultKind
    status: int | None = None
    retry_after: float | str | None = None
    retry_after_ms: int | None = None
    html: bool = False
    should_retry: bool | None = None
    seconds: float | None = None
    body: str | None = None
    content_type: str | None = None
    applied: bool = False
    echo_headers: bool = False
    headers: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self) -> None:
        """Reject options that do not fit the kind."""
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}.")
        if self.kind == "server_error" and self.status not in SERVER_ERROR_STATUSES:
            raise ValueError(f"A server error needs a 5xx status, one of {sorted(SERVER_ERROR_STATUSES)}.")
        if self.kind == "answer" and not (isinstance(self.status, int) and 200 <= self.status <= 599):
            raise ValueError(f"An answer needs a status from 200 to 599, not {self.status!r}.")
        if self.kind == "latency" and (self.seconds is None or not 0 <= self.seconds < math.inf):
            raise ValueError(f"Latency needs a finite number of seconds >= 0, not {self.seconds!r}.")
        if self.kind == "hang" and self.seconds is not None and self.seconds < 0:
            raise ValueError(f"A hang cannot last {self.seconds!r} seconds.")
        if self.applied and self.kind == "latency":
            raise ValueError("Latency answers normally: it has no answer to lose, so it cannot be applied.")
        if self.echo_headers and self.kind != "server_error":
            raise ValueError("Only a server_error page echoes the request's headers.")
        if self.headers is not None and self.kind != "answer":
            raise ValueError("Only an answer fault sends headers of its own.")

    @classmethod
    def rate_limit(
        cls,
        retry_after: float | str | None = None,
        retry_after_ms: int | None = None,
        *,
        should_retry: bool | None = None,
    ) -> Fault:
        """Answer 429 ``rate_limit_exceeded``, with ``retry-after`` and/or ``retry-after-ms`` when given."""
        return cls("rate_limit", retry_after=retry_after, retry_after_ms=retry_after_ms, should_retry=should_retry)

    @classmethod
    def insufficient_quota(cls, *, should_retry: bool | None = None) -> Fault:
        """Answer 429 ``insufficient_quota`` (a retry cannot help)."""
        return cls("insufficient_quota", should_retry=should_retry)

    @classmethod
    def server_error(
        cls,
        status: int = 500,
        *,
        html: bool = False,
        should_retry: bool | None = None,
        applied: bool = False,
        echo_headers: bool = False,
    ) -> Fault:
        """Answer ``status`` (5xx) with a JSON error, or with a proxy's HTML page when ``html``.

        ``applied``: the API acted on the request first (a gateway's 502 after the cancel went through).
        ``echo_headers``: the page quotes the request's headers, the key included.
        """
        return cls(
            "server_error",
            status=status,
            html=html,
            should_retry=should_retry,
            applied=applied,
            echo_headers=echo_headers,
        )

    @classmethod
    def answer(
        cls,
        status: int,
        body: str = "",
        *,
        content_type: str | None = None,
        should_retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer ``status`` with ``body`` and ``headers`` as is: an odd error, a proxy's reply, a non-JSON body."""
        return cls(
            "answer",
            status=status,
            body=body,
            content_type=content_type,
            should_retry=should_retry,
            headers=tuple(headers.items()) if headers is not None else None,
        )

    @classmethod
    def latency(cls, seconds: float, *, should_retry: bool | None = None) -> Fault:
        """Wait ``seconds`` more, then answer normally."""
        return cls("latency", seconds=seconds, should_retry=should_retry)

    @classmethod
    def hang(cls, seconds: float | None = None, *, should_retry: bool | None = None, applied: bool = False) -> Fault:
        """Send nothing for ``seconds`` (None: until the client gives up), then answer normally.

        ``applied``: the API acts on the request when it arrives, so a client that gives up has lost the answer.
        """
        return cls("hang", seconds=seconds, should_retry=should_retry, applied=applied)

    @classmethod
    def drop(cls, *, applied: bool = False) -> Fault:
        """Close the connection without sending a single byte of response.

        ``applied``: the API acted on the request first (the cancel went through, its answer is lost).
        """
        return cls("drop", applied=applied)

    @property
    def delay(self) -> float:
        """Return how long the answer is held back (infinite for an endless hang)."""
        if self.kind in ("latency", "hang"):
            return math.inf if self.seconds is None else self.seconds
        return 0.0

    @property
    def answers(self) -> bool:
        """Return True when the fault replaces the answer with its own error."""
        return self.kind in ("rate_limit", "insufficient_quota", "server_error", "answer")

    def reply(self, request_headers: Sequence[tuple[str, str]] = ()) -> Response:
        """Return the answer of a ``rate_limit``, ``insufficient_quota``, ``server_error`` or ``answer`` fault.

        :param request_headers: The request's headers, quoted by an ``echo_headers`` page.
        """
        if self.kind == "rate_limit":
            headers: list[tuple[str, str]] = []
            if self.retry_after is not None:
                after = self.retry_after
                headers.append(("retry-after", after if isinstance(after, str) else f"{after:g}"))
            if self.retry_after_ms is not None:
                headers.append(("retry-after-ms", str(self.retry_after_ms)))
            answer = error_reply(
                429,
                "Rate limit reached for requests in organization org-emulator on requests per min (RPM): "
                "Limit 3, Used 3, Requested 1. Please try again later.",
                "requests",
                code="rate_limit_exceeded",
                headers=tuple(headers),
            )
        elif self.kind == "insufficient_quota":
            answer = error_reply(
                429,
                "You exceeded your current quota, please check your plan and billing details. For more "
                "information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                code="insufficient_quota",
            )
        elif self.kind == "server_error" and self.status is not None:
            answer = self._server_error_reply(self.status, request_headers if self.echo_headers else ())
        elif self.kind == "answer" and self.status is not None:
            answer = reply(self.status, (self.body or "").encode(), self.headers or ())
            if self.content_type is not None:
                answer.headers["content-type"] = self.content_type
        else:
            raise ValueError(f"A {self.kind} fault does not answer by itself.")
        return self.decorate(answer)

    def decorate(self, answer: Response) -> Response:
        """Return ``answer`` with ``x-should-retry`` added when the fault sets it."""
        if self.should_retry is not None:
            answer.headers.append("x-should-retry", "true" if self.should_retry else "false")
        return answer

    def _server_error_reply(self, status: int, echoed: Sequence[tuple[str, str]]) -> Response:
        if self.html:
            # What nginx or a CDN in front of the API sends: not JSON at all.
            title = f"{status} {HTTPStatus(status).phrase}"
            quoted = "".join(f"{escape(name)}: {escape(value)}<br>\r\n" for name, value in echoed)
            page = (
                f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                f"<center><h1>{title}</h1></center>\r\n{quoted}<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            )
            return reply(status, page.encode(), content_type="text/html")
        message = _SERVER_ERROR_MESSAGES.get(status, "The server had an error while processing your request.")
        if echoed:
            message += " Request headers: " + json.dumps(dict(echoed))
        return error_reply(status, message, "server_error")

    def to_json(self) -> dict[str, object]:
        """Return the fault as JSON data, the form the admin endpoint accepts."""
        data = {name: value for name, value in asdict(self).items() if value is not None}
        if self.headers is not None:
            data["headers"] = dict(self.headers)
        for flag in _DEFAULT_FALSE_FLAGS:  # left out when unset, as None options are; should_retry=False is kept
            if not data[flag]:
                del data[flag]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Fault:
        """Build a fault from :meth:`to_json`'s form, e.g. ``{"kind": "server_error", "status": 502}``.

        :raises ValueError: On an unknown kind or option, or an option of the wrong type.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown fault option(s): {sorted(unknown)}.")
        kind = data.get("kind")
        if not isinstance(kind, str):
            raise ValueError("A fault needs a 'kind'.")
        return cls(
            cast("FaultKind", kind),
            status=_whole(data, "status"),
            retry_after=_text_or_number(data, "retry_after"),
            retry_after_ms=_whole(data, "retry_after_ms"),
            html=bool(_flag(data, "html")),
            applied=bool(_flag(data, "applied")),
            echo_headers=bool(_flag(data, "echo_headers")),
            should_retry=_flag(data, "should_retry"),
            seconds=_number(data, "seconds"),
            body=_text(data, "body"),
            content_type=_text(data, "content_type"),
            headers=_headers(data),
        )


def _number(data: Mapping[str, object], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    # bool is an int subclass, and True seconds is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"Fault option {name!r} must be a number, not {value!r}.")
    return float(value)


def _text(data: Mapping[str, object], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"Fault option {name!r} must be text, not {value!r}.")


def _text_or_number(data: Mapping[str, object], name: str) -> str | float | None:
    value = data.get(name)
    return value if isinstance(value, str) else _number(data, name)


def _headers(data: Mapping[str, object]) -> tuple[tuple[str, str], ...] | None:
    value = data.get("headers")
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"Fault option 'headers' must be an object of strings, not {value!r}.")
    return tuple(value.items())


def _whole(data: Mapping[str, object], name: str) -> int | None:
    value = _number(data, name)
    if value is not None and not value.is_integer():
        raise ValueError(f"Fault option {name!r} must be a whole number, not {value!r}.")
    return None if value is None else int(value)


def _flag(data: Mapping[str, object], name: str) -> bool | None:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"Fault option {name!r} must be true or false, not {value!r}.")


@dataclass
class _Scripted:
    fault: Fault
    method: str | None
    path: str | None
    remaining: int
    skip: int = 0


@dataclass
class _Random:
    rate: float
    rng: random.Random
    faults: tuple[Fault, ...]
    method: str | None
    path: str | None


def _matches(method: str | None, path: str | None, request_method: str, request_path: str) -> bool:
    return (method is None or method.upper() == request_method) and (path is None or fnmatchcase(request_path, path))


@dataclass
class FaultPlan:
    """Which requests get a fault: scripted ones first, then random ones; thread-safe."""

    _scripted: list[_Scripted] = field(default_factory=list)
    _random: _Random | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(
        self, fault: Fault, method: str | None = None, path: str | None = None, times: int = 1, *, skip: int = 0
    ) -> None:
        """Inject ``fault`` into the next ``times`` requests matching ``method`` and the ``path`` glob.

        :param skip: Matching requests let through first (the second page of a list, say: ``skip=1``).
        """
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times!r}.")
        if skip < 0:
            raise ValueError(f"skip cannot be negative, not {skip!r}.")
        with self._lock:
            self._scripted.append(_Scripted(fault, method, path, times, skip))

    def set_random(
        self,
        rate: float,
        seed: int | None,
        faults: Sequence[Fault],
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Inject one of ``faults`` into each matching request with probability ``rate``, reproducibly.

        Replaces earlier random faults; ``rate=0`` turns them off.
        """
        if not 0 <= rate <= 1:
            raise ValueError(f"rate must be between 0 and 1, not {rate!r}.")
        if rate and not faults:
            raise ValueError("Random faults need at least one fault to choose from.")
        with self._lock:
            self._random = _Random(rate, random.Random(seed), tuple(faults), method, path) if rate else None

    def clear(self) -> None:
        """Forget every scripted and random fault."""
        with self._lock:
            self._scripted.clear()
            self._random = None

    def pick(self, method: str, path: str) -> Fault | None:
        """Return the fault for one request (consuming a scripted one), or None."""
        with self._lock:
            for rule in self._scripted:
                if _matches(rule.method, rule.path, method, path):
                    if rule.skip:
                        rule.skip -= 1
                        continue
                    rule.remaining -= 1
                    if not rule.remaining:
                        self._scripted.remove(rule)
                    return rule.fault
            chance = self._random
            # Draw only for matching requests, so other traffic does not shift the sequence.
            if (
                chance is not None
                and _matches(chance.method, chance.path, method, path)
                and chance.rng.random() < chance.rate
            ):
                return chance.rng.choice(chance.faults)
            return None
