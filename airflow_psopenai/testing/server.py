"""The emulator's HTTP server: an ASGI app on uvicorn (which every Airflow 3 install has), in a thread of its own.

uvicorn speaks HTTP (keep-alive, pipelining, malformed requests); the app turns each request into
the emulator's :class:`~airflow_psopenai.testing.messages.Pending` answer, holds it back for its
delay while watching for the client to leave, and sends it. uvicorn's h11 protocol keeps a request
target as sent, so an absolute-form target (the emulator standing in for a proxy) reaches the
journal whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.requests import Request

from airflow_psopenai.testing.messages import HttpRequest, error_reply, new_request_id

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from airflow_psopenai.testing.messages import Pending

    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

#: Large enough for a thousand clients connecting at once on loopback.
LISTEN_BACKLOG = 2048
MAX_BODY_BYTES = 1 << 20
STARTUP_TIMEOUT_SEC = 10.0


class _DroppedConnection(Exception):
    """Raised after an answer was started, so that uvicorn closes the connection half-way (a drop fault)."""


class _NotADrop(logging.Filter):
    """Keep uvicorn from logging each dropped connection as an application error: they are on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _DroppedConnection))


logging.getLogger("uvicorn.error").addFilter(_NotADrop())
# uvicorn logs each request when the access logger has a handler, inherited ones included: not wanted
# from an emulator (the journal says more), and formatting a line per request costs its CPU.
logging.getLogger("uvicorn.access").propagate = False


class EmulatorApp:
    """The ASGI app: each request to ``handler``, its answer after the delay, unless the client has left.

    Connections are numbered by the client's address, in order of first request, so a reused
    connection keeps its number in the journal.
    """

    def __init__(self, handler: Callable[[HttpRequest], Pending]) -> None:
        self.handler = handler
        self._connections: dict[tuple[str, int], int] = {}

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        """Serve one ASGI ``http`` call (uvicorn runs with lifespan events off)."""
        body = b""
        async for chunk in Request(scope, receive).stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                return await error_reply(413, "Request body too large.")(scope, receive, send)
        client = scope.get("client") or ("", 0)
        number = self._connections.setdefault((client[0], client[1]), len(self._connections) + 1)
        request = HttpRequest.from_scope(scope, body, number)
        try:
            pending = self.handler(request)
            if pending.delay > 0 and not await _client_stays(receive, pending.delay):
                return None  # the client left during the delay: nothing to answer
            answer = pending.finish()
        except Exception:
            # A bug in the emulator: answer like the API's own server errors rather than hang up.
            log.exception("The OpenAI emulator failed to answer %s %s", request.method, request.target)
            answer = error_reply(500, "The server had an error while processing your request.", "server_error")
        if answer is None:
            # A dropped connection: ASGI cannot close without answering, so start the answer, then abort it.
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1")]})
            raise _DroppedConnection
        answer.headers.append("x-request-id", new_request_id())
        return await answer(scope, receive, send)


async def _client_stays(receive: Receive, delay: float) -> bool:
    """Wait ``delay`` seconds (for ever if infinite); return False as soon as the client disconnects."""
    try:
        async with asyncio.timeout(None if math.isinf(delay) else delay):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return True
    return False


class HttpServer:
    """Serve ``handler`` on ``host``:``port`` from a background thread.

    uvicorn's own ``serve()`` polls for its exit every 0.1 s and sleeps again on shutdown, which a
    test starting an emulator would pay at every stop: the server is started and stopped here.

    :param handler: Turns each request into a :class:`Pending` answer; called on the server's thread.
    :param host: Address to bind.
    :param port: Port to bind; 0 picks a free one (see :attr:`port` once started).
    """

    def __init__(self, handler: Callable[[HttpRequest], Pending], host: str = "127.0.0.1", port: int = 0) -> None:
        """Prepare, without binding yet."""
        self.app = EmulatorApp(handler)
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._stop: Callable[[], object] = lambda: None

    @property
    def running(self) -> bool:
        """Return True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None

    def start(self) -> None:
        """Bind and start serving; return once the port is open.

        :raises OSError: When the address cannot be bound.
        """
        if self._thread is not None:
            raise RuntimeError("The server is already running.")
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it each
        # answer (headers, then body) waits 40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM, 6)
        # A restart on the same port must not wait for the last run's connections to leave TIME_WAIT
        # (the emulator closes its side first); a port another server listens on still fails.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))  # here, so that an address in use fails in the caller
            sock.listen(LISTEN_BACKLOG)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http="h11",
            loop="asyncio",
            lifespan="off",
            log_config=None,
            access_log=False,
            backlog=LISTEN_BACKLOG,
            timeout_keep_alive=30,
            date_header=False,  # uvicorn's main loop refreshes it, which this server does not run
            server_header=False,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        loop = asyncio.new_event_loop()
        stopping = asyncio.Event()
        started = threading.Event()

        async def serve() -> None:
            await server.startup(sockets=[sock])
            started.set()
            await stopping.wait()
            for listener in server.servers:
                listener.close()
            # A request a hang holds back has no answer to finish: closed without a byte, as a server
            # that goes away would close it.
            for connection in list(server.server_state.connections):
                with contextlib.suppress(Exception):
                    connection.transport.abort()
            await asyncio.gather(*(listener.wait_closed() for listener in server.servers))

        def run() -> None:
            try:
                loop.run_until_complete(serve())
            except BaseException:
                log.exception("The OpenAI emulator stopped unexpectedly")
            finally:
                started.set()
                sock.close()
                loop.close()

        thread = threading.Thread(target=run, name=f"openai-emulator-{self.host}:{self.port}", daemon=True)
        thread.start()
        if not started.wait(STARTUP_TIMEOUT_SEC) or not server.started:
            raise RuntimeError(f"The OpenAI emulator did not start on {self.host}:{self.port}.")
        self._thread = thread
        self._stop = lambda: loop.call_soon_threadsafe(stopping.set)

    def stop(self) -> None:
        """Close the port and every connection, and join the thread."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._stop()
        self._thread.join()
        self._thread = None
