"""Requests as the emulator's handlers see them, and their replies (Starlette responses)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

from starlette.responses import Response

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow_psopenai.testing.state import ApiError

JSON = "application/json"


@dataclass(frozen=True)
class HttpRequest:
    """One request as received.

    :param method: Upper-case method.
    :param target: Request target exactly as sent (percent-encoding kept).
    :param headers: Header pairs with lower-case names, in the order received.
    :param body: The whole body.
    :param connection: Number of the client connection it came on (1 for the server's first).
    """

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    connection: int = 0

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any], body: bytes, connection: int) -> HttpRequest:
        """Return the request of an ASGI ``http`` scope (the target as sent: uvicorn's h11 keeps it whole)."""
        query = scope.get("query_string", b"")
        target = scope["raw_path"].decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        headers = tuple((name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"])
        return cls(scope["method"], target, headers, body, connection)

    @property
    def raw_path(self) -> str:
        """Return the target's path, without the query string.

        An absolute-form target (``http://host/v1/...``, as a client sends through a forward
        proxy) is served as its path, as RFC 9112 asks of servers: a test can use the emulator
        as the proxy and see the absolute form in the journal.
        """
        path = self.target.partition("?")[0]
        scheme, separator, rest = path.partition("://")
        if separator and scheme in ("http", "https"):
            return "/" + rest.partition("/")[2]
        return path

    @property
    def segments(self) -> list[str]:
        """Return the path segments, each percent-decoded once after splitting on ``/``.

        An ID holding ``/``, ``?``, ``#`` or ``..`` thus stays one literal segment.
        """
        return [unquote(segment) for segment in self.raw_path.split("/")[1:]]

    @property
    def path(self) -> str:
        """Return the decoded path (for display and globbing, not for routing)."""
        return "/" + "/".join(self.segments)

    @property
    def query(self) -> dict[str, str]:
        """Return the query parameters (the first value of each)."""
        query: dict[str, str] = {}
        for name, value in parse_qsl(self.target.partition("?")[2], keep_blank_values=True):
            query.setdefault(name, value)
        return query

    def header(self, name: str) -> str | None:
        """Return the values of header ``name`` (lower case) joined by ``", "``, or None when absent."""
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None

    def json(self) -> object:
        """Return the body parsed as JSON (an empty body is an empty object).

        :raises ValueError: When the body is not JSON.
        """
        return json.loads(self.body) if self.body.strip() else {}


def new_request_id() -> str:
    """Return an ID in the format of OpenAI's ``x-request-id``."""
    return "req_" + os.urandom(16).hex()


def reply(status: int, body: bytes, headers: tuple[tuple[str, str], ...] = (), content_type: str = JSON) -> Response:
    """Return an answer with ``content_type`` exactly as given (Starlette would add a charset to text types)."""
    response = Response(body, status_code=status, headers={"content-type": content_type})
    for name, value in headers:
        response.headers.append(name, value)
    return response


@dataclass(frozen=True)
class Pending:
    """What to do with a request: wait ``delay`` seconds, then send what ``finish`` returns.

    ``finish`` returning None means: drop the connection. The server runs ``finish`` only after the
    delay and only if the client is still connected, so state is read when the answer is sent.
    """

    finish: Callable[[], Response | None]
    delay: float = 0.0


def json_reply(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """Return a JSON reply."""
    return reply(status, json.dumps(payload).encode(), headers)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, object]:
    """Return an error body in the shape of OpenAI's ``ErrorResponse``."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_reply(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    """Return an OpenAI-style JSON error reply."""
    return json_reply(status, error_body(message, type_, param, code), headers)


def api_error_reply(error: ApiError) -> Response:
    """Return the API's answer to an error of the emulator's state or of a request's checks."""
    return error_reply(error.status, error.message, error.type, param=error.param, code=error.code)
