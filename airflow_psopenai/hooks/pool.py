"""One async connection pool per event loop, shared by every hook (and so every trigger) in that loop.

Authentication travels per request, so hooks of different connections share the pool safely;
only the timeouts are pool settings, and they are part of the pool's key. A thousand waiting
triggers thus keep a bounded set of keep-alive connections instead of a thousand pools.

httpcore rescans all of a pool's connections for every request, and for every queued request
when one finishes: quadratic CPU once many more requests wait than there are connections (54 ms
of CPU per request with 1,000 triggers on one 200-connection ``AsyncClient``). So each connection
lives in a transport of its own, and requests wait for a free one in an ``asyncio`` queue, which
costs next to nothing (see benchmarks/ for the figures).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

import httpx

from airflow_psopenai.hooks.settings import USER_AGENT

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping

CONNECTIONS = 200  # enough for a thousand triggers, gentle on the API
# What httpx.AsyncClient would add, less what these calls never use (cookies, redirects, compression).
DEFAULT_HEADERS = {"Accept": "application/json", "User-Agent": USER_AGENT}


class SharedPool:
    """Up to ``CONNECTIONS`` keep-alive connections, each in a transport of its own, lent one request at a time.

    The most recently returned connection is lent first, so a few waits reuse one or two
    connections and a thousand spread over all of them; a request waits in a queue for a free one.
    Requests go to httpx's transport directly: ``AsyncClient``'s layers (auth flow, redirects,
    cookies, event hooks) do nothing for these calls and cost a third of a poll's CPU.
    """

    def __init__(self, timeout: httpx.Timeout, proxy: str | None = None) -> None:
        # Waiting for a free connection of our own pool is not the server's fault: no pool timeout.
        self.timeout = httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.write, pool=None)
        self._extensions = {"timeout": self.timeout.as_dict()}
        self._proxy = proxy
        self._limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=30)
        # One TLS context for all connections (each costs milliseconds and memory), made on first use.
        self._tls: asyncio.Future[ssl.SSLContext] | None = None
        self._transports: list[httpx.AsyncHTTPTransport] = []  # created when needed, up to CONNECTIONS
        self._created = 0  # counted before the TLS context is awaited, so CONNECTIONS holds meanwhile
        self._free: asyncio.LifoQueue[httpx.AsyncHTTPTransport] = asyncio.LifoQueue()
        self.is_closed = False

    async def request(self, method: str, url: httpx.URL, *, headers: Mapping[str, str]) -> httpx.Response:
        """Send one request on a free connection, waiting for one first; read the whole body."""
        request = httpx.Request(method, url, headers={**DEFAULT_HEADERS, **headers}, extensions=self._extensions)
        transport = await self._borrow()
        try:
            response = await transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        finally:
            self._free.put_nowait(transport)
        response.request = request
        return response

    async def _borrow(self) -> httpx.AsyncHTTPTransport:
        if self._free.empty() and self._created < CONNECTIONS:
            self._created += 1
            if self._tls is None:
                # Loading the CA bundle takes tens of milliseconds: in a thread, not in the event loop.
                self._tls = asyncio.ensure_future(asyncio.to_thread(httpx.create_ssl_context))
            tls = await asyncio.shield(self._tls)
            self._transports.append(httpx.AsyncHTTPTransport(limits=self._limits, verify=tls, proxy=self._proxy))
            return self._transports[-1]
        return await self._free.get()

    async def aclose(self) -> None:
        """Close every connection."""
        self.is_closed = True
        await asyncio.gather(*(transport.aclose() for transport in self._transports))


_PoolKey = tuple[tuple[float, ...], str | None]
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[_PoolKey, SharedPool]] = weakref.WeakKeyDictionary()


def _timeout_key(timeout: httpx.Timeout) -> tuple[float, ...]:
    return tuple(-1.0 if value is None else value for value in timeout.as_dict().values())


def shared_pool(timeout: httpx.Timeout, proxy: str | None = None) -> SharedPool:
    """Return the running loop's pool for these timeouts and proxy, creating it on first use."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    key = (_timeout_key(timeout), proxy)
    pool = pools.get(key)
    if pool is None or pool.is_closed:
        pool = pools[key] = SharedPool(timeout, proxy)
    return pool


def shared_pool_count() -> int:
    """Return how many pools the running loop holds (one per distinct timeout and proxy)."""
    return len(_pools.get(asyncio.get_running_loop(), {}))


async def aclose_shared_clients() -> None:
    """Close the running loop's shared pools (tests, benchmarks, orderly shutdown)."""
    pools = _pools.pop(asyncio.get_running_loop(), {})
    await asyncio.gather(*(pool.aclose() for pool in pools.values()))
