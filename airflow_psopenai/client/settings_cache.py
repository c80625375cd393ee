"""Resolved settings shared by the hooks of one event loop for a short while.

A triggerer that starts a thousand waits on one connection would otherwise look it up a thousand
times, each lookup going through the supervisor and the secrets backends: it was the largest
cost of a trigger after HTTP itself (see benchmarks/). Lookups of the same connection and
overrides that overlap wait for the first one; its result is reused for ``SETTINGS_TTL_SEC``, so a
rotated key or a changed connection is picked up within a minute. A failed lookup is not kept.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from airflow_psopenai.client.loop_scoped import PerLoop

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

    from airflow_psopenai.client.settings import ApiSettings

SETTINGS_TTL_SEC = 60.0

_Entry = tuple[float, "asyncio.Task[ApiSettings]"]
_entries: PerLoop[dict[Hashable, _Entry]] = PerLoop(dict)


async def shared_settings(key: Hashable, lookup: Callable[[], Awaitable[ApiSettings]]) -> ApiSettings:
    """Return the settings for ``key``: from a lookup under way or done within the TTL, else from ``lookup()``."""
    entries = _entries.get()
    entry = entries.get(key)
    if entry is None or entry[0] <= time.monotonic():

        async def fill() -> ApiSettings:
            try:
                return await lookup()
            except BaseException:
                if entries.get(key, (0.0, None))[1] is asyncio.current_task():
                    del entries[key]
                raise

        entry = entries[key] = (time.monotonic() + SETTINGS_TTL_SEC, asyncio.ensure_future(fill()))
    # Shielded: a waiter that is cancelled (its task marked failed) must not cancel the others' lookup.
    return await asyncio.shield(entry[1])
