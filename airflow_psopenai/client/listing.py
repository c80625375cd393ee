"""Walking a list of the API page by page, with the guards every listing shares.

A gateway may ignore ``after`` (the same page again and again, or pages in a cycle) or answer junk.
Every listing (``StopBatchesOperator(metadata=...)``, the failure and deadline callbacks, the listener,
the status board's walk, ``create_batch``'s look for an earlier try's batch) reads pages through
:class:`ListWalk`, which makes each of those an error named as such, once: a cursor used before or a
page with no new ID means the list repeats itself; a page whose ``data`` is not a list of objects is
malformed; and :data:`MAX_PAGES` is a last guard. Items are handed out once each (a batch listed twice
is one batch), and an item without a text ``id`` is never handed out.

:func:`walk_list` (and :func:`awalk_list`, awaited) is the one walk every listing makes on top of it:
newest first down to a moment less :func:`cutoff_margin`, keeping the objects whose metadata matches,
reading a page again after a transient failure, and, when a page still cannot be read or a budget or
page cap ends it, keeping what it found and saying what it did not read (:class:`Listed`). It takes
its page reader as an argument: the client knows nothing of the hook above it.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.client.validation import preview, require_epoch_seconds
from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIError, PSOpenAIInvalidResponseError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from airflow_psopenai.resources import CancellableResource

    # Reads the page after a cursor (None: the first), within a deadline: the hook's list_page or alist_page.
    PageReader = Callable[[str | None, Deadline], dict[str, Any]]
    AsyncPageReader = Callable[[str | None, Deadline], Awaitable[dict[str, Any]]]

# 100,000 objects at 100 a page: far more than any run launches; past it, something repeats itself unseen.
MAX_PAGES = 1000
REPEATS_ITSELF = "repeats itself; a gateway that ignores `after`?"


class ListWalk:
    """One walk down a list: checks each page, hands out each object once, says where the next page starts.

    :param resource: What is listed (for the messages).
    :param redact: Takes the key out of what the server sent, before it goes into a message.
    """

    def __init__(self, resource: CancellableResource, redact: Callable[[str], str]) -> None:
        self._label = resource.label
        self._redact = redact
        self._cursors: set[str | None] = set()
        self._seen: set[str] = set()
        self.pages = 0

    def read(self, page: dict[str, Any], after: str | None) -> list[dict[str, Any]]:
        """Check the page read at cursor ``after``; return its objects not handed out before, in order.

        :raises PSOpenAIInvalidResponseError: For a malformed page, a list that repeats itself, too many pages.
        """
        if after in self._cursors:
            raise self.error(f"the {self._label} list {REPEATS_ITSELF} (the page after {after!r} was asked for twice)")
        self._cursors.add(after)
        self.pages += 1
        data = page.get("data")
        if not isinstance(data, list):
            raise self.error(f"a page of the {self._label} list has no list of objects (data: {preview(data)})")
        junk = [item for item in data if not isinstance(item, dict)]
        if junk:
            raise self.error(f"a page of the {self._label} list holds something that is no object ({preview(junk[0])})")
        fresh: list[dict[str, Any]] = []
        for item in data:
            object_id = item.get("id")
            if isinstance(object_id, str) and object_id and object_id not in self._seen:
                self._seen.add(object_id)
                fresh.append(item)
        if data and page.get("has_more") and not fresh:
            raise self.error(f"the {self._label} list {REPEATS_ITSELF} (a page held no object not seen before)")
        return fresh

    def next_after(self, page: dict[str, Any]) -> str | None:
        """Return the cursor of the next page, or None at the end of the list.

        :raises PSOpenAIInvalidResponseError: When the list goes on past :data:`MAX_PAGES` pages, or its last
            item has no ``id`` to go on from.
        """
        data: list[Any] = page.get("data") or []
        if not page.get("has_more") or not data:
            return None
        last = data[-1].get("id")
        if not isinstance(last, str) or not last:
            raise self.error(f"the last object of a page of the {self._label} list has no ID to go on from")
        if self.pages >= MAX_PAGES:
            raise self.error(f"the {self._label} list goes on for more than {MAX_PAGES} pages; it {REPEATS_ITSELF}")
        return last

    def error(self, what: str) -> PSOpenAIInvalidResponseError:
        """Return the error of a list that cannot be trusted, naming ``what`` (redacted)."""
        return PSOpenAIInvalidResponseError(self._redact(f"Listing failed: {what}."), http_status=200)


# -- one walk down a list, for every caller -----------------------------------------------------------------

# How far before the moment a caller asks for the walk still reads: the API's clock (its created_at)
# may be behind this machine's by a few seconds or minutes, and a batch it dates before the moment
# must still be found. ``[psopenai] cutoff_margin_sec`` (AIRFLOW__PSOPENAI__CUTOFF_MARGIN_SEC) sets it.
CUTOFF_MARGIN_SEC = 300.0
# A page read that failed on a transient error (a 5xx, a timeout, a 429 but for quota) is read again,
# up to this many reads (each with the hook's own retries): a list read changes nothing, so it is read
# again even where max_retry_count is 0 for the cancels.
PAGE_READS = 3
PAGE_SIZE = 100


def cutoff_margin() -> float:
    """Return ``[psopenai] cutoff_margin_sec``, or :data:`CUTOFF_MARGIN_SEC` when it is not set.

    :raises PSOpenAIConfigurationError: For a value that is no number of seconds of 0 or more.
    """
    from airflow.providers.common.compat.sdk import conf

    text = conf.get("psopenai", "cutoff_margin_sec", fallback=None)
    if text is None or not str(text).strip():
        return CUTOFF_MARGIN_SEC
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise PSOpenAIConfigurationError(
            f"[psopenai] cutoff_margin_sec must be a number of seconds of 0 or more, got {text!r}."
        )
    return value


@dataclass
class Listed:
    """What a walk found: the objects whose metadata matched (newest first), how much it read, what it did not.

    :param found: The matching objects, newest first, each once.
    :param scanned: Objects looked at (those before the cutoff not counted).
    :param pages: Pages read.
    :param unread: Why the walk stopped before the cutoff or the end of the list (a page that could not be
        read, a spent budget, a list that repeats itself or answers junk); None when nothing stopped it.
    :param capped: Whether the walk stopped at its page cap with more to read.
    :param set_apart: Matching objects the caller left out of ``found``, counted by why.
    """

    found: list[dict[str, Any]] = field(default_factory=list)
    scanned: int = 0
    pages: int = 0
    unread: PSOpenAIError | None = None
    capped: bool = False
    set_apart: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Return whether every page down to the cutoff (or the end) was read."""
        return self.unread is None and not self.capped

    def what_was_not_read(self, label: str) -> str:
        """Return the part of the list not looked at and why, e.g. "the batch list past page 2 (...)" ('' if none)."""
        if self.complete:
            return ""
        part = f"the {label} list past page {self.pages}" if self.pages else f"the whole {label} list"
        why = str(self.unread) if self.unread is not None else f"the walk's cap of {self.pages} pages"
        return f"{part} ({why})"


class _Walk:
    """The decisions of one walk, apart from how its pages are read (synchronously or awaited)."""

    def __init__(
        self,
        resource: CancellableResource,
        redact: Callable[[str], str],
        metadata: Mapping[str, str | None],
        since: float | None,
        max_pages: int,
    ) -> None:
        if since is not None:
            require_epoch_seconds(since, "since")
        # created_at is whole seconds: the cut is at the whole second before the moment less the margin.
        self.cutoff = None if since is None else math.floor(since - cutoff_margin())
        self.metadata = dict(metadata)
        self.max_pages = max_pages
        self.guard = ListWalk(resource, redact)
        self.label = resource.label
        self.listed = Listed()

    def take(self, page: dict[str, Any], after: str | None) -> str | None:
        """Take one page read at ``after``; return where the next one starts, or None when the walk is over."""
        items = self.guard.read(page, after)
        self.listed.pages = self.guard.pages
        for item in items:
            created_at = item.get("created_at")
            if self.cutoff is not None and isinstance(created_at, int | float) and created_at < self.cutoff:
                return None
            self.listed.scanned += 1
            if metadata_holds(item.get("metadata"), self.metadata):
                self.listed.found.append(item)
        following = self.guard.next_after(page)
        if following is not None and self.guard.pages >= self.max_pages:
            self.listed.capped = True
            return None
        return following

    def stop(self, error: PSOpenAIError) -> Listed:
        self.listed.unread = error
        return self.listed


def metadata_holds(held: object, wanted: Mapping[str, str | None]) -> bool:
    """Return whether an object's ``metadata`` holds every pair of ``wanted``; a None value: the key is absent."""
    pairs = held if isinstance(held, dict) else {}
    return all(pairs.get(key) == value for key, value in wanted.items())


def walk_list(
    read_page: PageReader,
    resource: CancellableResource,
    redact: Callable[[str], str],
    *,
    metadata: Mapping[str, str | None],
    since: float | None,
    deadline: Deadline = NO_DEADLINE,
    max_pages: int = MAX_PAGES,
) -> Listed:
    """Walk the list newest first down to ``since`` (less the cutoff margin); return what matched ``metadata``.

    Never raises for the list itself: a page that cannot be read (after :data:`PAGE_READS` reads of a
    transient failure), a spent ``deadline``, a list that repeats itself or answers junk, or ``max_pages``
    ends the walk, and :attr:`Listed.unread` says so; what was found before is kept.

    :param read_page: Reads the page after a cursor (None: the first) within a deadline.
    :param since: Epoch seconds: objects created before it (less the margin) are not read; None reads all.
    :raises PSOpenAIConfigurationError: For a ``since`` that is no moment, or a bad cutoff margin setting.
    """
    walk = _Walk(resource, redact, metadata, since, max_pages)
    after: str | None = None
    while True:
        reads = 0
        while True:
            reads += 1
            try:
                page = read_page(after, deadline)
                break
            except PSOpenAIError as error:
                if (delay := _read_again_after(error, reads, deadline)) is None:
                    return walk.stop(error)
                time.sleep(delay)
        try:
            after = walk.take(page, after)
        except PSOpenAIError as error:
            return walk.stop(error)
        if after is None:
            return walk.listed


async def awalk_list(
    read_page: AsyncPageReader,
    resource: CancellableResource,
    redact: Callable[[str], str],
    *,
    metadata: Mapping[str, str | None],
    since: float | None,
    deadline: Deadline = NO_DEADLINE,
    max_pages: int = MAX_PAGES,
) -> Listed:
    """Walk the list as :func:`walk_list` does, awaiting each page."""
    walk = _Walk(resource, redact, metadata, since, max_pages)
    after: str | None = None
    while True:
        reads = 0
        while True:
            reads += 1
            try:
                page = await read_page(after, deadline)
                break
            except PSOpenAIError as error:
                if (delay := _read_again_after(error, reads, deadline)) is None:
                    return walk.stop(error)
                await asyncio.sleep(delay)
        try:
            after = walk.take(page, after)
        except PSOpenAIError as error:
            return walk.stop(error)
        if after is None:
            return walk.listed


def _read_again_after(error: PSOpenAIError, reads: int, deadline: Deadline) -> float | None:
    """Return the seconds to wait before reading a failed page again, or None when it is not read again."""
    from airflow_psopenai.client.retry import backoff_delay, is_retryable

    if reads >= PAGE_READS or not is_retryable(error):
        return None
    delay = backoff_delay(reads, getattr(error, "retry_after", None))
    return delay if deadline.allows(delay) else None


__all__ = [
    "CUTOFF_MARGIN_SEC",
    "MAX_PAGES",
    "PAGE_READS",
    "REPEATS_ITSELF",
    "ListWalk",
    "Listed",
    "awalk_list",
    "cutoff_margin",
    "metadata_holds",
    "walk_list",
]
