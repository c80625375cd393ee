"""Coalesced status polling: the batch waits of one event loop and one connection read list pages together.

Each wait polls its object once per interval. Batches also have an account-wide list, newest first,
100 to a page: when several batch polls are due at once, one board reads the pages that hold them
and hands each wait its batch, about N/100 requests a round instead of N (list items are the same
objects a retrieve returns). A wait may be answered up to half its delay early by a round that reads
its page anyway, so waits of one page started at different times fall into step after one poll.
Different pages keep their own phases (the first walk from the head reads them one after the other):
a round is not every page at once, whose parsing would hold the last page's answers back.

Where each batch sits in the list does not move: ``after=ID`` returns the batches older than ``ID``,
and new batches only come in at the head. So a board remembers the cursor of the page each batch
was found on, and later rounds read those pages directly instead of walking the list from the
head. A batch the list does not reach at a fair price (more pages than batches found)
is polled with its own GET for the rest of its wait.

A round keeps each wait's deadline: a poll due at the deadline is asked for at it (not one page
latency before), and a walk from the head asks for no further page once every wait it still looks
for is past its deadline; such a wait polls once with its own GET (its last poll) as soon as the
walk notices, while the walk goes on for the waits still within theirs.

A failed page means for each of its waits what a failed GET would have meant: a transient error
(429, 5xx, no answer) is handed to them as their poll's error, and they back off as usual. A
permanent one sends them to their own GETs, which say what is wrong with each; a 403, 404 or 405
(a gateway that does not serve the list) turns the board off for good, logged once. The
``coalesce_polling`` extra of the connection turns it off from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.client.listing import ListWalk
from airflow_psopenai.client.retry import is_retryable
from airflow_psopenai.exceptions import PSOpenAIAPIError, PSOpenAIError, PSOpenAIInvalidResponseError
from airflow_psopenai.resources import has_status

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

    from airflow_psopenai.client.settings import ApiSettings
    from airflow_psopenai.hooks.psopenai import JsonObject, PSOpenAIHook
    from airflow_psopenai.resources import CancellableResource

    Poll = Callable[[float, Deadline], Awaitable[JsonObject]]

# With one or two polls due, their own GETs cost no more requests than a page and less CPU.
MIN_COALESCED = 3
PAGE_SIZE = 100  # the API's largest page
# A wait joins a round that runs anyway once this share of its delay has passed.
EARLY_SHARE = 0.5
# Statuses of a list request that mean "this gateway does not serve the list (to this key)".
LIST_UNSERVED = (403, 404, 405)
_HEAD = ""  # the cursor of the list's first page


@dataclass(eq=False)
class _Due:
    """One wait's next poll: when it may run, when it must, and where its answer goes."""

    object_id: str
    page: str | None  # the cursor of the page expected to hold it (None: its own GET)
    earliest: float  # on the event loop's clock
    due: float
    deadline: Deadline
    answer: asyncio.Future[JsonObject | None]  # None: poll with your own GET
    taken: bool = False  # by a round, or given up by its wait


@dataclass
class _Outcome:
    """One round: its waits by ID, what it found (handed over page by page), the errors it hands over at its end.

    Every wait neither found nor given an error polls with its own GET.
    """

    dues: dict[str, list[_Due]]
    found: dict[str, JsonObject] = field(default_factory=dict)
    errors: dict[str, PSOpenAIError] = field(default_factory=dict)


class StatusBoard:
    """The batch polls of one event loop and one connection's settings, answered from shared list pages.

    :param hook: The hook whose list calls the board makes (any hook of these settings).
    :param resource: A resource with a ``list_path``.
    :param settings: The settings of every wait on this board.
    """

    def __init__(self, hook: PSOpenAIHook, resource: CancellableResource, settings: ApiSettings) -> None:
        assert resource.list_path is not None
        self._hook = hook
        self._api_base = settings.api_base
        self._redact = settings.redact
        self._resource = resource
        self._id_field = resource.id_fields[0]
        # The polls no round has taken yet: by due time (a heap, ties by arrival), and by page for early joins.
        self._queue: list[tuple[float, int, _Due]] = []
        self._arrivals = itertools.count()
        self._by_page: dict[str | None, set[_Due]] = {}
        self._watchers: Counter[str] = Counter()
        self._cursors: dict[str, str] = {}  # ID -> the `after` of the page it was last found on
        self._created: dict[str, float] = {}  # ID -> its created_at, from its last answer
        # ID -> when the page it was read from was asked for: its next poll is timed from then, so that
        # a page is read every poll_interval, not every poll_interval plus the time its answer takes.
        self._read_at: dict[str, float] = {}
        self._far: set[str] = set()  # IDs polled with their own GET
        self._enabled = True
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._next_round = float("inf")
        self._rounds: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def watch(
        self,
        object_id: str,
        get: Callable[[Deadline], Awaitable[JsonObject]],
        *,
        own_get_on_page_error: bool = False,
    ) -> AsyncIterator[Poll]:
        """Follow one object for a whole wait; yield its ``poll(delay, deadline)``.

        :param get: The wait's own GET of the object, for polls no page answers (made in the wait's
            task, so that its retries are logged where the wait logs).
        :param own_get_on_page_error: A page lost to a transient error sends the poll to its own GET at
            once instead of raising that error (for a single look, which has no next poll to retry on).

        What the board learnt about the object (its page) is forgotten when no wait follows it any more.
        """
        self._watchers[object_id] += 1

        async def poll(delay: float, deadline: Deadline) -> JsonObject:
            try:
                answer = await self._poll(object_id, delay, deadline)
            except PSOpenAIError:
                if not own_get_on_page_error:
                    raise
                answer = None
            if answer is None:
                answer = await get(deadline)
                self._note_created(object_id, answer)
            return answer

        try:
            yield poll
        finally:
            self._watchers[object_id] -= 1
            if self._watchers[object_id] <= 0:
                del self._watchers[object_id]
                self._cursors.pop(object_id, None)
                self._created.pop(object_id, None)
                self._read_at.pop(object_id, None)
                self._far.discard(object_id)

    def _note_created(self, object_id: str, obj: JsonObject) -> None:
        created_at = obj.get("created_at")
        if isinstance(created_at, int | float) and not isinstance(created_at, bool):
            self._created[object_id] = created_at

    async def _poll(self, object_id: str, delay: float, deadline: Deadline) -> JsonObject | None:
        """Return the object in ``delay`` seconds (sooner when a round runs anyway), within ``deadline``.

        None: no page holds it this round, the wait polls with its own GET now.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        since = min(now, self._read_at.pop(object_id, now))
        # Timed from when its page was last asked for, but never asked for before the deadline: the last
        # poll sees the object as it is at the deadline, not one page latency before it.
        due_at = min(since + delay, now + deadline.sleep_before_poll(delay))
        page = self._page_of(object_id)
        earliest = min(since + delay * EARLY_SHARE, due_at)
        due = _Due(object_id, page, earliest, due_at, deadline, loop.create_future())
        heapq.heappush(self._queue, (due.due, next(self._arrivals), due))
        self._by_page.setdefault(page, set()).add(due)
        self._schedule(due.due)
        # No timer of its own (one per wait and poll costs much of a large round's CPU): every
        # page of its round is bounded by the earliest deadline of the waits it serves, this one's included.
        try:
            return await due.answer
        finally:
            self._take_out(due)  # a wait cancelled while queued leaves no trace

    # -- rounds ---------------------------------------------------------------------------------------

    def _schedule(self, due: float) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        elif due < self._next_round:
            self._wakeup.set()

    def _take_out(self, due: _Due) -> None:
        """Mark a poll as taken and drop it from its page's set (its heap entry is skipped when it comes up)."""
        due.taken = True
        waiting = self._by_page.get(due.page)
        if waiting is not None:
            waiting.discard(due)
            if not waiting:
                del self._by_page[due.page]

    async def _run(self) -> None:
        """Start a round whenever a poll is due, taking in the polls of the same pages that may run early."""
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            while queue and queue[0][2].taken:
                heapq.heappop(queue)
            if not queue:
                break
            self._wakeup.clear()
            self._next_round = queue[0][0]
            if (sleep := self._next_round - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sleep):
                        await self._wakeup.wait()
                continue
            now = loop.time()
            taken: list[_Due] = []
            while queue and queue[0][0] <= now:
                due = heapq.heappop(queue)[2]
                if not due.taken:
                    self._take_out(due)
                    taken.append(due)
            for page in {due.page for due in taken} - {None}:
                early = [due for due in self._by_page.get(page, ()) if due.earliest <= now]
                for due in early:
                    self._take_out(due)
                taken += early
            task = asyncio.create_task(self._round(taken))
            self._rounds.add(task)
            task.add_done_callback(self._rounds.discard)
        self._next_round = float("inf")

    def _page_of(self, object_id: str) -> str | None:
        """Return the cursor of the page a round reads for this batch (None: it polls with its own GET)."""
        return None if object_id in self._far else self._cursors.get(object_id, _HEAD)

    async def _round(self, taken: list[_Due]) -> None:
        by_id: dict[str, list[_Due]] = {}
        for due in taken:
            by_id.setdefault(due.object_id, []).append(due)
        deadlines = {object_id: _earliest(due.deadline for due in dues) for object_id, dues in by_id.items()}
        outcome = _Outcome(by_id)
        listed = [object_id for object_id in deadlines if object_id not in self._far]
        try:
            if self._enabled and len(listed) >= MIN_COALESCED:
                await self._read_pages(listed, deadlines, outcome)
        except Exception:  # a fault of ours must not stop the waits: they poll with their own GETs
            self._hook.log.exception("Reading the batch list failed; these batches are polled one by one.")
        finally:  # whatever happened, no wait is left without an answer
            for object_id, dues in by_id.items():
                for due in dues:
                    if due.answer.done():
                        continue
                    if object_id in outcome.errors:
                        due.answer.set_exception(outcome.errors[object_id])
                    else:
                        due.answer.set_result(None)

    # -- list pages -------------------------------------------------------------------------------------

    async def _read_pages(self, wanted: list[str], deadlines: Mapping[str, Deadline], outcome: _Outcome) -> None:
        """Read the pages that hold ``wanted``: remembered pages at once, the rest walking from the head."""
        by_cursor: dict[str, list[str]] = {}
        for object_id in wanted:
            by_cursor.setdefault(self._cursors.get(object_id, _HEAD), []).append(object_id)
        head = by_cursor.pop(_HEAD, [])
        # A page for a single batch costs a request as its own GET does, and more CPU: it polls alone.
        by_cursor = {cursor: ids for cursor, ids in by_cursor.items() if len(ids) > 1}
        await asyncio.gather(
            self._walk_from_head(head, deadlines, outcome) if head else _nothing(),
            *(self._read_remembered(cursor, ids, deadlines, outcome) for cursor, ids in by_cursor.items()),
        )

    async def _read_remembered(
        self, cursor: str, ids: list[str], deadlines: Mapping[str, Deadline], outcome: _Outcome
    ) -> None:
        if await self._page(cursor, ids, deadlines, outcome, self._walk()) is None:
            return
        for object_id in ids:  # not where it was (it cannot move): its own GETs from now on
            if object_id not in outcome.found:
                self._cursors.pop(object_id, None)
                self._far.add(object_id)

    async def _walk_from_head(self, ids: list[str], deadlines: Mapping[str, Deadline], outcome: _Outcome) -> None:
        """Walk the list from its newest batch until every one of ``ids`` is seen, or walking costs more than
        their GETs, or the page reaches batches older than all of them, or each one left is past its deadline.

        A wait whose deadline passes during the walk is handed back before the next page is asked for:
        its own GET is its poll at the deadline, and the walk goes on only for waits still within theirs.
        """
        cursor, pages, found = _HEAD, 0, 0
        missing = set(ids)
        walk = self._walk()
        while missing:
            page = await self._page(cursor, list(missing), deadlines, outcome, walk)
            if page is None:
                return
            pages += 1
            before = len(missing)
            missing -= outcome.found.keys()
            found += before - len(missing)
            items = page["data"]
            if not missing or not items or pages > found or self._passed(items[-1], missing):
                break
            try:
                after = walk.next_after(page)
            except PSOpenAIInvalidResponseError as error:
                self._turn_off(error)
                return
            if after is None:
                break
            cursor = after
            missing -= self._hand_back_past_deadline(missing, deadlines, outcome)
        self._far.update(missing - outcome.errors.keys())

    @staticmethod
    def _hand_back_past_deadline(missing: set[str], deadlines: Mapping[str, Deadline], outcome: _Outcome) -> set[str]:
        """Send the waits of ``missing`` whose deadline has passed to their own GETs now; return their IDs."""
        past = {object_id for object_id in missing if deadlines[object_id].passed()}
        for object_id in past:
            for due in outcome.dues[object_id]:
                if not due.answer.done():
                    due.answer.set_result(None)
        return past

    def _walk(self) -> ListWalk:
        return ListWalk(self._resource, self._redact)

    def _turn_off(self, error: PSOpenAIError) -> None:
        """Stop reading the list for good (it is malformed, repeats itself, or is not served), logged once."""
        if self._enabled:
            self._enabled = False
            self._hook.log.warning("Polling batches one by one from now on: reading the batch list failed: %s", error)

    def _passed(self, oldest_item: object, missing: set[str]) -> bool:
        """Return whether the list went past every missing batch: its items are older than each of them.

        ``created_at`` is in whole seconds, so a batch of the same second may still come: only strictly older counts.
        """
        created_at = oldest_item.get("created_at") if isinstance(oldest_item, dict) else None
        known = [self._created.get(object_id) for object_id in missing]
        return (
            isinstance(created_at, int | float)
            and all(when is not None for when in known)
            and created_at < min(when for when in known if when is not None)
        )

    def _take(
        self,
        items: list[JsonObject],
        cursor: str,
        asked_at: float,
        deadlines: Mapping[str, Deadline],
        outcome: _Outcome,
    ) -> None:
        """Hand over every polled batch the page holds at once, and remember the page as where each one is.

        An item without a status says nothing of its batch: its wait polls with its own GET.
        """
        for item in items:
            object_id = item.get("id")
            if (
                isinstance(object_id, str)
                and object_id in deadlines
                and object_id not in outcome.found
                and has_status(item)
            ):
                outcome.found[object_id] = item
                outcome.errors.pop(object_id, None)
                self._cursors[object_id] = cursor
                self._note_created(object_id, item)
                self._read_at[object_id] = asked_at
                for due in outcome.dues[object_id]:
                    if not due.answer.done():
                        due.answer.set_result(item)

    async def _page(
        self, cursor: str, ids: list[str], deadlines: Mapping[str, Deadline], outcome: _Outcome, walk: ListWalk
    ) -> JsonObject | None:
        """Read one list page of ``walk`` and hand over what it holds (``_take``); return it.

        None: the page failed, and its failure went to ``ids`` (its error, or their own GETs).
        """
        # The earliest: a wait ends at its deadline; the others get a transient error and poll again.
        deadline = _earliest(deadlines[object_id] for object_id in ids)
        asked_at = asyncio.get_running_loop().time()
        try:
            page = await self._hook.alist_page(
                self._resource, after=cursor or None, page_size=PAGE_SIZE, deadline=deadline
            )
        except PSOpenAIError as error:
            if is_retryable(error):
                outcome.errors.update((object_id, error) for object_id in ids if object_id not in outcome.found)
                return None
            if isinstance(error, PSOpenAIAPIError) and error.http_status in LIST_UNSERVED and self._enabled:
                self._enabled = False
                self._hook.log.warning(
                    "Polling batches one by one from now on: the list endpoint answered %s (%s).",
                    error.http_status,
                    error,
                )
            return None
        try:
            items = walk.read(page, cursor or None)
        except PSOpenAIInvalidResponseError as error:  # malformed, or repeating itself: the same next round
            self._turn_off(error)
            return None
        self._take(items, cursor, asked_at, deadlines, outcome)
        return page


async def _nothing() -> None:
    return None


def _earliest(deadlines: Iterable[Deadline]) -> Deadline:
    """Return the earliest of some deadlines (none at all when none of them has one); a budget stays a budget."""
    ends = [deadline for deadline in deadlines if deadline.at is not None]
    return min(ends, key=lambda deadline: deadline.at or 0.0) if ends else NO_DEADLINE


_boards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ApiSettings], StatusBoard]] = (
    weakref.WeakKeyDictionary()
)


def status_board(hook: PSOpenAIHook, resource: CancellableResource, settings: ApiSettings) -> StatusBoard:
    """Return the running loop's board for this resource and these settings (key included), made on first use."""
    boards = _boards.setdefault(asyncio.get_running_loop(), {})
    key = (resource.name, settings)
    board = boards.get(key)
    if board is None:
        board = boards[key] = StatusBoard(hook, resource, settings)
    return board


@contextlib.asynccontextmanager
async def status_poller(
    hook: PSOpenAIHook,
    resource: CancellableResource,
    ids: Mapping[str, str],
    *,
    own_get_slots: asyncio.Semaphore | None = None,
    own_get_on_page_error: bool = False,
) -> AsyncIterator[Poll]:
    """Yield ``poll(delay, deadline)`` for one wait or look: through the board for batches, else a GET after the delay.

    :param own_get_slots: Bounds the GETs of the object itself (not the board's page reads) that run at once.
    :param own_get_on_page_error: See :meth:`StatusBoard.watch`.
    """
    settings = await hook.asettings()

    async def get(deadline: Deadline) -> JsonObject:
        async with own_get_slots if own_get_slots is not None else contextlib.nullcontext():
            return await hook.aget_object(resource, ids, deadline=deadline)

    if resource.list_path is not None and settings.coalesce_polling:
        board = status_board(hook, resource, settings)
        async with board.watch(ids[resource.id_fields[0]], get, own_get_on_page_error=own_get_on_page_error) as poll:
            yield poll
        return

    async def poll_alone(delay: float, deadline: Deadline) -> JsonObject:
        await asyncio.sleep(deadline.sleep_before_poll(delay))
        return await get(deadline)

    yield poll_alone


__all__ = ["StatusBoard", "status_board", "status_poller"]
