"""A small OpenAI-like server on 127.0.0.1 that misbehaves as a test tells it: the batch list, GETs and cancels.

The list's answers come from a function of the request (``after`` and how many list requests came
before), so a test can serve a list that ignores ``after``, pages in a cycle, junk items, corrupt
bodies, slow pages or hangs. GETs and cancels act on the batches it holds, as the API would.
"""

from __future__ import annotations

import gzip
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence


@dataclass
class Reply:
    """One answer: status, body (text, or an object sent as JSON), headers; ``delay`` seconds before it;
    ``hang``: no answer at all until the client leaves (or the server closes)."""

    body: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False


HANG = Reply(hang=True)


def page(items: Sequence[Any], *, has_more: bool = True, **headers: str) -> Reply:
    """Return a list page of ``items`` as the API sends it."""
    objects = [item for item in items if isinstance(item, dict)]
    return Reply(
        {
            "object": "list",
            "data": list(items),
            "first_id": objects[0].get("id") if objects else None,
            "last_id": objects[-1].get("id") if objects else None,
            "has_more": has_more,
        },
        headers=headers,
    )


def corrupt(**headers: str) -> Reply:
    """Return an answer whose body does not match its ``Content-Encoding``."""
    return Reply("not gzip at all", headers={"content-encoding": "gzip", **headers})


def batch(
    batch_id: str, status: str = "in_progress", *, created_at: int | None = None, **metadata: str
) -> dict[str, Any]:
    """Return a batch object as the list and a GET return it."""
    return {
        "id": batch_id,
        "object": "batch",
        "status": status,
        "created_at": int(time.time()) if created_at is None else created_at,
        "metadata": metadata,
    }


# What the tests against a gateway share: the key its connection holds, the run tags of its batches, and
# the slack of their time bounds (far above every budget, far below what the unbounded code took, or for ever).
GATEWAY_KEY = "sk-test-" + secrets.token_hex(16)
TAGS = {"airflow_dag_id": "pipeline", "airflow_run_id": "run-1"}
SLACK_SEC = 4.0


def tagged(count: int, prefix: str = "batch_", **kwargs: Any) -> list[dict[str, Any]]:
    """Return ``count`` batches with the run tags of run-1 of the DAG ``pipeline``."""
    return [batch(f"{prefix}{n:03d}", **kwargs, **TAGS) for n in range(count)]


def run_context(run_id: str = "run-1") -> dict[str, Any]:
    """Return a task's context with the DAG run ``run_id`` of ``pipeline``, created an hour ago."""
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    return {
        "dag_run": SimpleNamespace(dag_id="pipeline", run_id=run_id, run_after=datetime.now(UTC) - timedelta(hours=1))
    }


@dataclass
class Seen:
    """One request the gateway received."""

    method: str
    path: str
    query: dict[str, str]


class Gateway:
    """The server. ``lists(after, n)`` answers the n-th list request (n from 0); ``gets`` and ``cancels``
    may replace the answer to a batch's GET or cancel (None: the normal answer).

    :param batches: The batches by ID; a cancel turns an in-progress one into ``cancelling``.
    """

    def __init__(
        self,
        batches: Sequence[dict[str, Any]] = (),
        *,
        lists: Callable[[str | None, int], Reply] | None = None,
        gets: Callable[[str], Reply | None] | None = None,
        cancels: Callable[[str], Reply | None] | None = None,
    ) -> None:
        self.batches = {str(item["id"]): dict(item) for item in batches}
        self.lists = lists or self.honest_list
        self.gets = gets or (lambda _batch_id: None)
        self.cancels = cancels or (lambda _batch_id: None)
        self.seen: list[Seen] = []
        self.closing = threading.Event()
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                gateway._handle(self, "GET")

            def do_POST(self) -> None:
                gateway._handle(self, "POST")

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        """Return the base URL to put in a connection."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def honest_list(self, after: str | None, _n: int) -> Reply:
        """Answer as the API does: newest first, 100 to a page, after ``after``."""
        ordered = sorted(self.batches.values(), key=lambda item: -int(item["created_at"]))
        ids = [item["id"] for item in ordered]
        start = ids.index(after) + 1 if after in ids else 0
        return page(ordered[start : start + 100], has_more=start + 100 < len(ordered))

    def requests(self, method: str | None = None, kind: str | None = None) -> list[Seen]:
        """Return the requests received: ``kind`` ``list``, ``get`` or ``cancel``."""
        with self._lock:
            seen = list(self.seen)
        return [entry for entry in seen if (method is None or entry.method == method) and _kind(entry) in (kind, None)]

    def cancelled(self) -> list[str]:
        """Return the batch of each cancel request, in order (one entry per request)."""
        return [entry.path.split("/")[3] for entry in self.requests(kind="cancel")]

    def __enter__(self) -> Gateway:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        query = {name: values[-1] for name, values in parse_qs(split.query).items()}
        length = int(handler.headers.get("content-length") or 0)
        if length:
            handler.rfile.read(length)
        entry = Seen(method, split.path, query)
        with self._lock:
            self.seen.append(entry)
            number = sum(1 for other in self.seen if _kind(other) == "list") - 1
        parts = split.path.strip("/").split("/")
        if method == "GET" and parts == ["v1", "batches"]:
            answer = self.lists(query.get("after"), number)
        elif method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "batches"]:
            answer = self.gets(parts[2]) or self._object(parts[2])
        elif method == "POST" and len(parts) == 4 and parts[3] == "cancel":
            answer = self.cancels(parts[2]) or self._cancel(parts[2])
        else:
            answer = Reply({"error": {"message": "no such route"}}, status=404)
        self._send(handler, answer)

    def _object(self, batch_id: str) -> Reply:
        with self._lock:
            found = self.batches.get(batch_id)
            return Reply(dict(found)) if found else Reply({"error": {"message": "No batch found"}}, status=404)

    def _cancel(self, batch_id: str) -> Reply:
        with self._lock:
            found = self.batches.get(batch_id)
            if found is None:
                return Reply({"error": {"message": "No batch found"}}, status=404)
            if found["status"] in ("validating", "in_progress", "finalizing"):
                found["status"] = "cancelling"
                found["cancelling_at"] = int(time.time())
            return Reply(dict(found))

    def _send(self, handler: BaseHTTPRequestHandler, answer: Reply) -> None:
        if answer.hang:
            self.closing.wait()
            handler.close_connection = True
            return
        if answer.delay and self.closing.wait(answer.delay):
            handler.close_connection = True
            return
        body = answer.body if isinstance(answer.body, str | bytes) else json.dumps(answer.body)
        data = body.encode() if isinstance(body, str) else body
        headers = {"content-type": "application/json", **answer.headers}
        if headers.get("content-encoding") == "gzip-valid":
            headers["content-encoding"], data = "gzip", gzip.compress(data)
        try:
            handler.send_response(answer.status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client left
            handler.close_connection = True


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Say nothing of a client that left (a test's timeout does that on purpose)."""


def _kind(entry: Seen) -> str:
    parts = entry.path.strip("/").split("/")
    if parts == ["v1", "batches"]:
        return "list"
    if entry.method == "POST" and parts[-1:] == ["cancel"]:
        return "cancel"
    return "get"


def serve(batches: Sequence[dict[str, Any]] = (), **kwargs: Any) -> Iterator[Gateway]:
    """Yield a running gateway (for fixtures)."""
    with Gateway(batches, **kwargs) as gateway:
        yield gateway
