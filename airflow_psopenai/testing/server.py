"""A small HTTP/1.1 server on h11 and asyncio, in its own event loop on a daemon thread.

Working on the socket directly, rather than through a web framework, lets a fault close a
connection without a byte of response, or hold an answer back while noticing that the client left.
Keep-alive and pipelining follow h11.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import threading
from collections.abc import Callable

import h11

from airflow_psopenai.testing.messages import HttpReply, HttpRequest, Pending, error_reply

Handler = Callable[[HttpRequest], Pending]
log = logging.getLogger(__name__)

#: Large enough for a thousand clients connecting at once on loopback.
LISTEN_BACKLOG = 2048
MAX_BODY_BYTES = 1 << 20
_READ_SIZE = 65536


def new_request_id() -> str:
    """Return an ID in the format of OpenAI's ``x-request-id``."""
    return "req_" + os.urandom(16).hex()


class _ClientGone(Exception):
    """The client closed its side of the connection."""


class _Connection:
    """One client connection: read requests, answer them, until either side closes."""

    def __init__(
        self, handler: Handler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        self.handler = handler
        self.number = number
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(h11.SERVER)

    async def serve(self) -> None:
        try:
            while True:
                try:
                    request = await self._read_request()
                except h11.RemoteProtocolError as error:
                    if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        await self._send(error_reply(error.error_status_hint, f"Bad request: {error}"))
                    return
                if request is None:
                    return
                reply = await self._answer(request)
                if reply is None:
                    return  # A dropped connection: close without answering.
                await self._send(reply)
                if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                    return
                self.h11.start_next_cycle()
        except (_ClientGone, ConnectionError, h11.LocalProtocolError):
            return
        finally:
            self.writer.close()

    async def _answer(self, request: HttpRequest) -> HttpReply | None:
        try:
            pending = self.handler(request)
            if pending.delay > 0:
                await self._wait(pending.delay)
            return pending.finish()
        except _ClientGone:
            raise
        except Exception:
            # A bug in the emulator: answer like the API's own server errors rather than hang up.
            log.exception("The OpenAI emulator failed to answer %s %s", request.method, request.target)
            return error_reply(500, "The server had an error while processing your request.", "server_error")

    async def _receive(self) -> None:
        data = await self.reader.read(_READ_SIZE)
        self.h11.receive_data(data)

    async def _read_request(self) -> HttpRequest | None:
        """Return the next request, or None when the client closed the connection between requests."""
        start: h11.Request | None = None
        body = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                await self._receive()
            elif isinstance(event, h11.Request):
                start = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError("Request body too large.", error_status_hint=413)
            elif isinstance(event, h11.EndOfMessage) and start is not None:
                headers = tuple((name.decode("latin-1"), value.decode("latin-1")) for name, value in start.headers)
                return HttpRequest(
                    start.method.decode("ascii"), start.target.decode("latin-1"), headers, bytes(body), self.number
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds (forever if infinite), but stop at once if the client leaves.

        :raises _ClientGone: When the client closed the connection meanwhile.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            read = asyncio.ensure_future(self.reader.read(_READ_SIZE))
            try:
                done, _ = await asyncio.wait({read}, timeout=None if math.isinf(remaining) else remaining)
            finally:
                read.cancel()
            if not done:
                # Let the read finish cancelling: the stream allows one reader at a time.
                with contextlib.suppress(asyncio.CancelledError):
                    await read
                return
            data = read.result()
            if not data:
                raise _ClientGone
            # A pipelined request: keep it for the next cycle.
            self.h11.receive_data(data)

    async def _send(self, reply: HttpReply) -> None:
        headers = [
            ("content-type", reply.content_type),
            ("content-length", str(len(reply.body))),
            ("x-request-id", new_request_id()),
            *reply.headers,
        ]
        data = self.h11.send(h11.Response(status_code=reply.status, headers=headers))
        data += self.h11.send(h11.Data(data=reply.body)) + self.h11.send(h11.EndOfMessage())
        self.writer.write(data)
        await self.writer.drain()


class HttpServer:
    """Serve ``handler`` on ``host``:``port`` from a background thread.

    :param handler: Turns each request into a :class:`Pending` answer; called on the server's thread.
    :param host: Address to bind.
    :param port: Port to bind; 0 picks a free one (see :attr:`port` once started).
    """

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        """Prepare, without binding yet."""
        self.handler = handler
        self.host = host
        self.port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

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
        self._ready.clear()
        self._error = None
        thread = threading.Thread(target=self._run, name=f"openai-emulator-{self.host}:{self.port}", daemon=True)
        thread.start()
        self._ready.wait()
        if self._error is not None:
            thread.join()
            raise self._error
        self._thread = thread

    def stop(self) -> None:
        """Close the port and every connection, and join the thread."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:
            if self._ready.is_set():
                log.exception("The OpenAI emulator stopped unexpectedly")
            else:
                # Binding failed: start() raises it in the caller's thread.
                self._error = error
                self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()
        numbers = itertools.count(1)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # Serve in a task of our own: asyncio's streams complain when the callback's task is cancelled.
            serving = asyncio.ensure_future(_Connection(self.handler, reader, writer, next(numbers)).serve())
            connections.add(serving)
            serving.add_done_callback(connections.discard)
            with contextlib.suppress(asyncio.CancelledError):
                await serving

        server = await asyncio.start_server(on_connect, self.host, self.port, backlog=LISTEN_BACKLOG)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()
        # Let the connection callbacks see their tasks end and the transports finish closing.
        await asyncio.sleep(0)
