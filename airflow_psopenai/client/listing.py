"""Walking a list of the API page by page, with the guards every listing shares.

A gateway may ignore ``after`` (the same page again and again, or pages in a cycle) or answer junk.
Every listing (``StopBatchesOperator(metadata=...)``, the failure and deadline callbacks, the listener,
the status board's walk, ``create_batch``'s look for an earlier try's batch) reads pages through
:class:`ListWalk`, which makes each of those an error named as such, once: a cursor used before or a
page with no new ID means the list repeats itself; a page whose ``data`` is not a list of objects is
malformed; and :data:`MAX_PAGES` is a last guard. Items are handed out once each (a batch listed twice
is one batch), and an item without a text ``id`` is never handed out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_psopenai.client.validation import preview
from airflow_psopenai.exceptions import PSOpenAIInvalidResponseError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.resources import CancellableResource

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
            raise self._error(f"the {self._label} list {REPEATS_ITSELF} (the page after {after!r} was asked for twice)")
        self._cursors.add(after)
        self.pages += 1
        data = page.get("data")
        if not isinstance(data, list):
            raise self._error(f"a page of the {self._label} list has no list of objects (data: {preview(data)})")
        junk = [item for item in data if not isinstance(item, dict)]
        if junk:
            raise self._error(
                f"a page of the {self._label} list holds something that is no object ({preview(junk[0])})"
            )
        fresh: list[dict[str, Any]] = []
        for item in data:
            object_id = item.get("id")
            if isinstance(object_id, str) and object_id and object_id not in self._seen:
                self._seen.add(object_id)
                fresh.append(item)
        if data and page.get("has_more") and not fresh:
            raise self._error(f"the {self._label} list {REPEATS_ITSELF} (a page held no object not seen before)")
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
            raise self._error(f"the last object of a page of the {self._label} list has no ID to go on from")
        if self.pages >= MAX_PAGES:
            raise self._error(f"the {self._label} list goes on for more than {MAX_PAGES} pages; it {REPEATS_ITSELF}")
        return last

    def _error(self, what: str) -> PSOpenAIInvalidResponseError:
        return PSOpenAIInvalidResponseError(self._redact(f"Listing failed: {what}."), http_status=200)


__all__ = ["MAX_PAGES", "REPEATS_ITSELF", "ListWalk"]
