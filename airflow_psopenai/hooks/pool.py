"""One async connection pool per event loop, shared by every hook (and so every trigger) in that loop.

Authentication travels per request, so hooks of different connections share the pool safely;
only the timeouts are client settings, and they are part of the pool's key. A thousand waiting
triggers thus keep a bounded set of keep-alive connections instead of a thousand pools.
"""

from __future__ import annotations

import asyncio
import weakref

import httpx

from airflow_psopenai.hooks.settings import USER_AGENT

# Enough connections that a thousand triggers polling at once wait little for a slot; few enough
# to stay gentle with the API and the triggerer.
POOL_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=30)

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[float, ...], httpx.AsyncClient]] = (
    weakref.WeakKeyDictionary()
)


def _timeout_key(timeout: httpx.Timeout) -> tuple[float, ...]:
    return tuple(-1.0 if value is None else value for value in timeout.as_dict().values())


def shared_async_client(timeout: httpx.Timeout) -> httpx.AsyncClient:
    """Return the running loop's client for these timeouts, creating it on first use."""
    clients = _pools.setdefault(asyncio.get_running_loop(), {})
    key = _timeout_key(timeout)
    client = clients.get(key)
    if client is None or client.is_closed:
        # Waiting for a free connection of our own pool is not the server's fault: no pool timeout.
        pool_timeout = httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.write, pool=None)
        client = httpx.AsyncClient(timeout=pool_timeout, limits=POOL_LIMITS, headers={"User-Agent": USER_AGENT})
        clients[key] = client
    return client


def shared_pool_count() -> int:
    """Return how many clients the running loop holds (one per distinct timeout setting)."""
    return len(_pools.get(asyncio.get_running_loop(), {}))


async def aclose_shared_clients() -> None:
    """Close the running loop's shared clients (tests, benchmarks, orderly shutdown)."""
    clients = _pools.pop(asyncio.get_running_loop(), {})
    await asyncio.gather(*(client.aclose() for client in clients.values()))
