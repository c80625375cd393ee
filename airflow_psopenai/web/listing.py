"""Reading the account's batch list for the OpenAI page: one bounded walk, over pages shared between viewers.

Every walk goes through :func:`walk_batches`, which reads pages through the project's listing guard
(:class:`~airflow_psopenai.client.listing.ListWalk`): a list that repeats itself or answers junk ends
the walk, as it ends every listing. A walk is bounded by its budget as a whole; what it read by then
is kept, and the answer says why it stopped. Pages are cached for :data:`PAGE_TTL_SEC` seconds and
shared by every request of this process: ten open pages cost one read of each page per interval, and
requests that ask for a page being read wait for that read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_psopenai.client.listing import ListWalk
from airflow_psopenai.exceptions import PSOpenAIError, PSOpenAIInvalidResponseError
from airflow_psopenai.resources import BATCH

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_psopenai.client.deadline import Deadline
    from airflow_psopenai.hooks import PSOpenAIHook

PAGE_SIZE = 100
PAGE_TTL_SEC = 5.0
# Pages kept at most (older ones are dropped first): a few walks deep for a few connections.
MAX_CACHED_PAGES = 256
# A guard of last resort past the budget, for what takes no deadline (a connection lookup).
LAST_RESORT_GRACE_SEC = 0.5

Page = dict[str, Any]


class PageCache:
    """Pages of the list, by connection and cursor, kept :data:`PAGE_TTL_SEC` seconds; one read at a time each.

    :param ttl: Seconds a page is served from the cache.
    :param clock: Monotonic seconds (tests move it by hand).
    """

    def __init__(self, ttl: float = PAGE_TTL_SEC, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._pages: dict[tuple[str, str | None], tuple[float, Page]] = {}
        self._reads: dict[tuple[str, str | None], asyncio.Future[Page]] = {}

    async def page(self, key: tuple[str, str | None], read: Callable[[], Awaitable[Page]]) -> Page:
        """Return the page of ``key``: cached, being read by another request, or read now by ``read``."""
        cached = self._pages.get(key)
        if cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        pending = self._reads.get(key)
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = asyncio.ensure_future(self._read(key, read))
            self._reads[key] = pending
        # A viewer who leaves does not cancel the read the others wait for.
        return await asyncio.shield(pending)

    def clear(self) -> None:
        """Forget every page (after a cancel: the next read shows it)."""
        self._pages.clear()

    async def _read(self, key: tuple[str, str | None], read: Callable[[], Awaitable[Page]]) -> Page:
        try:
            page = await read()
        finally:
            self._reads.pop(key, None)
        self._pages[key] = (self._clock(), page)
        while len(self._pages) > MAX_CACHED_PAGES:
            self._pages.pop(next(iter(self._pages)))
        return page


@dataclass
class Walk:
    """What one walk read, in the API's list shape.

    :param data: The objects kept, newest first.
    :param has_more: Whether the account's list goes on past ``last_id``.
    :param last_id: The cursor of the next page: the last object read, kept or not.
    :param incomplete: Why the walk stopped early (its budget, a list that repeats itself), or None.
    :param read_any: Whether any page was read at all.
    """

    data: list[Page]
    has_more: bool
    last_id: str | None
    incomplete: str | None = None
    read_any: bool = False


async def walk_batches(
    hook: PSOpenAIHook,
    cache: PageCache,
    *,
    after: str | None,
    limit: int,
    select: Callable[[list[Page]], Awaitable[list[Page]]],
    created_after: float | None,
    budget: Deadline,
) -> Walk:
    """Read the batch list from ``after`` until ``limit`` objects are selected, it ends, or it reaches a batch
    created before ``created_after`` (epoch seconds); all of it within ``budget``.

    :param select: Returns the objects of one page to keep, in their order (asked once per page).
    :return: Never raises for the list itself: a page that fails, a list that repeats itself and a spent
        budget end the walk with what it has, and say so in :attr:`Walk.incomplete`.
    """
    walk = ListWalk(BATCH, (await hook.asettings()).redact)
    result = Walk([], has_more=False, last_id=after)
    cursor = after

    def read() -> Awaitable[Page]:
        return hook.alist_page(BATCH, after=cursor, page_size=PAGE_SIZE, deadline=budget)

    left = budget.poll_limit()
    try:
        async with asyncio.timeout(None if left is None else left + LAST_RESORT_GRACE_SEC):
            while True:
                page = await cache.page((hook.conn_id, cursor), read)
                result.read_any = True
                items = walk.read(page, cursor)
                older = [index for index, item in enumerate(items) if _created_before(item, created_after)]
                fresh = items[: older[0]] if older else items
                chosen = await select(fresh)
                room = limit - len(result.data)
                if len(chosen) >= room:
                    result.data += chosen[:room]
                    last = chosen[room - 1]
                    result.last_id = str(last["id"])
                    result.has_more = fresh.index(last) < len(fresh) - 1 or (not older and bool(page.get("has_more")))
                    return result
                result.data += chosen
                if fresh:
                    result.last_id = str(fresh[-1]["id"])
                if older:
                    return result
                cursor = walk.next_after(page)
                if cursor is None:
                    return result
                result.last_id = cursor
    except TimeoutError:
        result.has_more = True
        result.incomplete = f"The batch list did not answer within its time budget: {len(result.data)} shown."
    except PSOpenAIInvalidResponseError as error:
        result.has_more = False
        result.incomplete = str(error)
    except PSOpenAIError as error:
        result.has_more = True
        result.incomplete = str(error)
    return result


def _created_before(item: Page, created_after: float | None) -> bool:
    created_at = item.get("created_at")
    return (
        created_after is not None
        and isinstance(created_at, int | float)
        and not isinstance(created_at, bool)
        and created_at < created_after
    )
