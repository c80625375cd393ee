"""One async connection pool per event loop, shared by every hook (and so every trigger) in that loop.

Authentication travels per request, so hooks of different connections share the pool safely;
only the timeouts are client settings, and they are part of the pool's key. A thousand waiting
triggers thus keep a bounded set of keep-alive connections instead of a thousand pools.

httpcore rescans all of a client's connections for every queued request, which costs quadratic
CPU once many more requests wait than there are connections (54 ms of CPU per request with 1,000
triggers on one 200-connection client), and checks every connection of the client for each
request even when none waits. So the pool is split into small shards, and each shard admits only
as many requests as it has connections: waiting happens on a semaphore, for free (1.9 ms of CPU
per request, see benchmarks/).
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from typing import Any

import httpx

from airflow_psopenai.hooks.settings import USER_AGENT

SHARDS = 40
CONNECTIONS_PER_SHARD = 5  # 200 in all: enough for a thousand triggers, gentle on the API


class SharedPool:
    """Clients of a few connections each, used in turn, each behind a semaphore of its size."""

    def __init__(self, timeout: httpx.Timeout) -> None:
        # Waiting for a free connection of our own pool is not the server's fault: no pool timeout.
        client_timeout = httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.write, pool=None)
        limits = httpx.Limits(
            max_connections=CONNECTIONS_PER_SHARD, max_keepalive_connections=CONNECTIONS_PER_SHARD, keepalive_expiry=30
        )
        tls = httpx.create_ssl_context()  # one TLS context for all shards: each costs milliseconds and memory
        self._shards = [
            (
                httpx.AsyncClient(
                    timeout=client_timeout, limits=limits, verify=tls, headers={"User-Agent": USER_AGENT}
                ),
                asyncio.Semaphore(CONNECTIONS_PER_SHARD),
            )
            for _ in range(SHARDS)
        ]
        self._turn = itertools.cycle(range(SHARDS))

    @property
    def timeout(self) -> httpx.Timeout:
        """Return the timeouts every shard's client applies."""
        return self._shards[0][0].timeout

    @property
    def is_closed(self) -> bool:
        """Return whether the pool was closed."""
        return self._shards[0][0].is_closed

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request on the next shard, waiting for a free connection there first."""
        client, slots = self._shards[next(self._turn)]
        async with slots:
            return await client.request(method, url, **kwargs)

    async def aclose(self) -> None:
        """Close every shard's connections."""
        await asyncio.gather(*(client.aclose() for client, _ in self._shards))


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[float, ...], SharedPool]] = (
    weakref.WeakKeyDictionary()
)


def _timeout_key(timeout: httpx.Timeout) -> tuple[float, ...]:
    return tuple(-1.0 if value is None else value for value in timeout.as_dict().values())


def shared_pool(timeout: httpx.Timeout) -> SharedPool:
    """Return the running loop's pool for these timeouts, creating it on first use."""
    pools = _pools.setdefault(asyncio.get_running_loop(), {})
    key = _timeout_key(timeout)
    pool = pools.get(key)
    if pool is None or pool.is_closed:
        pool = pools[key] = SharedPool(timeout)
    return pool


def shared_pool_count() -> int:
    """Return how many pools the running loop holds (one per distinct timeout setting)."""
    return len(_pools.get(asyncio.get_running_loop(), {}))


async def aclose_shared_clients() -> None:
    """Close the running loop's shared pools (tests, benchmarks, orderly shutdown)."""
    pools = _pools.pop(asyncio.get_running_loop(), {})
    await asyncio.gather(*(pool.aclose() for pool in pools.values()))
