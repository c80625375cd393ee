"""One async connection pool per event loop and proxy, shared by every hook (and so every trigger) in that loop.

Authentication and timeouts travel per request, so hooks of different connections share the pool
safely. A thousand waiting triggers thus keep a bounded set of keep-alive connections instead of a
thousand pools.

httpcore rescans all of a pool's connections for every request, and for every queued request
when one finishes: quadratic CPU once many more requests wait than there are connections. So each connection
lives in a transport of its own, and requests wait for a free one on a semaphore, which costs
next to nothing (see benchmarks/ for the figures).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx

from airflow_psopenai.client.loop_scoped import PerLoop
from airflow_psopenai.client.settings import USER_AGENT

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

CONNECTIONS = 200  # enough for a thousand triggers, gentle on the API
# What httpx.AsyncClient would add, less what these calls never use (cookies, redirects, compression).
DEFAULT_HEADERS = {"Accept": "application/json", "User-Agent": USER_AGENT}


class TLSContextError(Exception):
    """The TLS context could not be made; the next request tries again."""


class UnreadableBodyError(Exception):
    """An answer whose body could not be decoded (it does not match its ``Content-Encoding``).

    :param response: The answer (status and headers; its body is unread).
    :param error: httpx's decoding error.
    """

    def __init__(self, response: httpx.Response, error: httpx.DecodingError) -> None:
        super().__init__(str(error))
        self.response = response
        self.error = error


class SharedPool:
    """Up to ``CONNECTIONS`` keep-alive connections, each in a transport of its own, lent one request at a time.

    A request holds one of ``CONNECTIONS`` slots from before it takes a connection until it gives it
    back, however it ends (answered, failed, cancelled), so no slot can be lost. A connection whose
    request was cancelled half-way is closed and replaced: httpcore can keep a connection it had begun
    to open for a cancelled request, reserved for nobody, and the next request would wait for it for
    ever. The most recently
    returned connection is lent first: a few waits reuse one or two connections and a thousand
    spread over all of them. Requests go to httpx's transport directly: ``AsyncClient``'s layers
    (auth flow, redirects, cookies, event hooks) do nothing for these calls and cost CPU on every poll.

    :param proxy: Proxy URL all its connections go through, or None.
    """

    def __init__(self, proxy: str | None = None) -> None:
        self._proxy = proxy
        self._limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30)
        # One TLS context for all connections (each costs milliseconds and memory), made on first use.
        self._tls: asyncio.Future[ssl.SSLContext] | None = None
        self._slots = asyncio.Semaphore(CONNECTIONS)
        self._transports: list[httpx.AsyncHTTPTransport] = []  # every one made, up to CONNECTIONS
        self._idle: list[httpx.AsyncHTTPTransport] = []  # a stack: the last returned is lent first
        self._closing: set[asyncio.Future[None]] = set()
        self.is_closed = False

    @property
    def open_connections(self) -> int:
        """Return how many connections the pool has made."""
        return len(self._transports)

    @property
    def idle_connections(self) -> int:
        """Return how many connections wait for a request."""
        return len(self._idle)

    async def request(
        self, method: str, url: httpx.URL, *, headers: Mapping[str, str], timeout: httpx.Timeout
    ) -> httpx.Response:
        """Send one request on a free connection, waiting for one first; read the whole body.

        :param timeout: This request's timeouts (waiting for a free connection of our own is never a timeout).
        :raises TLSContextError: When the TLS context could not be made.
        :raises UnreadableBodyError: When the body does not match its ``Content-Encoding``.
        """
        extensions = {"timeout": {**timeout.as_dict(), "pool": None}}
        request = httpx.Request(method, url, headers={**DEFAULT_HEADERS, **headers}, extensions=extensions)
        async with self._slots:
            transport = self._idle.pop() if self._idle else await self._new_transport()
            try:
                response = await transport.handle_async_request(request)
                try:
                    await response.aread()
                except httpx.DecodingError as error:
                    raise UnreadableBodyError(response, error) from None
                finally:
                    await response.aclose()
            except Exception:
                self._idle.append(transport)
                raise
            except BaseException:  # cancelled half-way
                self._discard(transport)
                raise
            self._idle.append(transport)
        response.request = request
        return response

    def _discard(self, transport: httpx.AsyncHTTPTransport) -> None:
        """Drop a connection and close it in the background (the caller is being cancelled)."""
        self._transports.remove(transport)
        closing = asyncio.ensure_future(transport.aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _new_transport(self) -> httpx.AsyncHTTPTransport:
        if self._tls is None or (self._tls.done() and (self._tls.cancelled() or self._tls.exception() is not None)):
            # Loading the CA bundle is slow enough to stall every other wait: in a thread, not in the event loop.
            self._tls = asyncio.ensure_future(asyncio.to_thread(httpx.create_ssl_context))
        try:
            # Shielded: a waiter that is cancelled must not cancel the others' load.
            tls = await asyncio.shield(self._tls)
        except (OSError, ValueError) as error:  # ssl.SSLError is an OSError
            raise TLSContextError(str(error)) from error
        transport = httpx.AsyncHTTPTransport(limits=self._limits, verify=tls, proxy=self._proxy)
        self._transports.append(transport)
        return transport

    async def aclose(self) -> None:
        """Close every connection."""
        self.is_closed = True
        await asyncio.gather(*(transport.aclose() for transport in self._transports), *self._closing)


async def _aclose_pools(pools: dict[str | None, SharedPool]) -> None:
    await asyncio.gather(*(pool.aclose() for pool in pools.values()))


# Closed when their loop ends (asyncio.run), so no connection outlives the loop that made it.
_pools: PerLoop[dict[str | None, SharedPool]] = PerLoop(dict, _aclose_pools)


def shared_pool(proxy: str | None = None) -> SharedPool:
    """Return the running loop's pool for this proxy, creating it on first use."""
    pools = _pools.get()
    pool = pools.get(proxy)
    if pool is None or pool.is_closed:
        pool = pools[proxy] = SharedPool(proxy)
    return pool


async def aclose_shared_clients() -> None:
    """Close the running loop's shared pools now (a loop run by hand; ``asyncio.run`` closes them itself)."""
    await _pools.end()
