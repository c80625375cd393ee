"""The record of every API request the emulator received, for tests to inspect."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, replace
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_psopenai.testing.faults import Fault
    from airflow_psopenai.testing.messages import HttpRequest

REDACTED = "<redacted>"
# Headers that carry credentials: a journal is printed in test failures and served over HTTP.
SECRET_HEADERS = frozenset({"authorization", "api-key"})


@dataclass(frozen=True)
class JournalEntry:
    """One API request and what it got.

    :param method: Upper-case method.
    :param path: Path with each segment percent-decoded.
    :param raw_target: Request target exactly as received, percent-encoding and query kept.
    :param query: Query parameters (first value of each).
    :param headers: Headers with lower-case names; credentials replaced by ``"<redacted>"``.
    :param time: When the request arrived, in epoch seconds of the emulator's clock.
    :param status: Status answered, or None when the connection was dropped or the request hung.
    :param fault: Kind of the injected fault, if any.
    :param connection: Number of the client connection it came on: equal numbers show a reused connection.
    :param applied: The API acted on the request although the fault took its answer away (a lost answer).
    """

    method: str
    path: str
    raw_target: str
    query: dict[str, str]
    headers: dict[str, str]
    time: float
    status: int | None = None
    fault: str | None = None
    connection: int = 0
    applied: bool = False

    @classmethod
    def of(cls, request: HttpRequest, time: float, fault: Fault | None) -> JournalEntry:
        """Return the entry of ``request``, not yet answered."""
        headers: dict[str, str] = {}
        for name, value in request.headers:
            shown = REDACTED if name in SECRET_HEADERS else value
            headers[name] = f"{headers[name]}, {shown}" if name in headers else shown
        return cls(
            request.method,
            request.path,
            request.target,
            request.query,
            headers,
            time,
            None,
            fault.kind if fault is not None else None,
            request.connection,
            fault is not None and fault.applied,
        )

    def to_json(self) -> dict[str, object]:
        """Return the entry as JSON data."""
        return asdict(self)


class Journal:
    """Thread-safe list of :class:`JournalEntry`, in order of arrival."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._entries: list[JournalEntry] = []
        # Bumped by clear(), so that a request answered after a reset does not touch a new entry.
        self._generation = 0

    def record(self, entry: JournalEntry) -> tuple[int, int]:
        """Append ``entry`` and return the handle :meth:`answered` needs."""
        with self._lock:
            self._entries.append(entry)
            return self._generation, len(self._entries) - 1

    def answered(self, handle: tuple[int, int], status: int) -> None:
        """Set the status of the entry ``handle`` points to."""
        generation, index = handle
        with self._lock:
            if generation == self._generation:
                self._entries[index] = replace(self._entries[index], status=status)

    def entries(self, method: str | None = None, path: str | None = None) -> list[JournalEntry]:
        """Return the entries, optionally only those with ``method`` and a path matching the glob ``path``."""
        with self._lock:
            entries = list(self._entries)
        return [
            entry
            for entry in entries
            if (method is None or entry.method == method.upper()) and (path is None or fnmatchcase(entry.path, path))
        ]

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._generation += 1
