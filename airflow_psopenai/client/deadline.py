"""How long a call may still take: a deadline that every request, retry and poll inside a wait shares.

Standard library only: operators import it at DAG-parse time.
"""

from __future__ import annotations

import time

# PSOpenAI's rule: a server-requested delay above 0 and up to a minute is honoured; otherwise its own delay applies.
MAX_SERVER_DELAY_SEC = 60.0
# A poll made at the deadline may take this long; a hanging server holds a wait no longer past it.
LAST_POLL_SEC = 1.0


def usable_server_delay(seconds: float | None) -> float | None:
    """Return the delay a server asked for (``retry-after``) if PSOpenAI's rule honours it: above 0, up to 60 s.

    ``retry-after: 0`` asks for nothing, and a longer delay than a minute is not waited for: the
    hook's retries and the waits then both use their own delay.
    """
    if seconds is not None and 0 < seconds <= MAX_SERVER_DELAY_SEC:
        return seconds
    return None


class Deadline:
    """When a wait ends: an absolute time in epoch seconds (so it survives a triggerer restart), or never.

    A wait polls once more at its deadline, so an object that settled just before it is not
    reported as a timeout: a call made at a wait's deadline still gets ``LAST_POLL_SEC``. A budget
    (:meth:`budget`: a callback's, a listing's) has no such floor: once spent, nothing more is sent.

    :param at: Epoch seconds, or None for no deadline.
    :param last_call_sec: The least a call made at the deadline may take (0: nothing is sent past it).
    """

    def __init__(self, at: float | None, *, last_call_sec: float = LAST_POLL_SEC) -> None:
        self.at = at
        self.last_call_sec = last_call_sec

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """Return a wait's deadline ``seconds`` from now (None: no deadline)."""
        return cls(None if seconds is None else time.time() + seconds)

    @classmethod
    def budget(cls, seconds: float | None) -> Deadline:
        """Return a budget of ``seconds`` from now, which bounds everything inside it (None: no bound)."""
        return cls(None if seconds is None else time.time() + seconds, last_call_sec=0.0)

    def spent(self) -> bool:
        """Return whether no call may start any more: a budget whose time has come (a wait's never is)."""
        return self.last_call_sec <= 0 and self.passed()

    def end_now(self) -> None:
        """Spend what is left (a process shutting down): no call starts under this deadline any more."""
        self.at = time.time() if self.at is None else min(self.at, time.time())

    def passed(self) -> bool:
        """Return whether the deadline has come."""
        return self.at is not None and time.time() >= self.at

    def allows(self, delay: float) -> bool:
        """Return whether something started ``delay`` seconds from now would still start before the deadline."""
        return self.at is None or time.time() + delay < self.at

    def sleep_before_poll(self, delay: float) -> float:
        """Return ``delay``, cut short so that a poll happens at the deadline."""
        return delay if self.at is None else max(0.0, min(delay, self.at - time.time()))

    def poll_limit(self) -> float | None:
        """Return how long one call may take: until the deadline, or ``last_call_sec`` for the one made at it.

        Every call made inside a wait or a budget, and each of its retries, is limited by this, so that
        a hanging server or the hook's own backoff cannot hold it past its deadline. A spent budget gives 0.
        """
        return None if self.at is None else max(self.at - time.time(), self.last_call_sec, 0.0)

    def part(self, share: float) -> Deadline:
        """Return a budget that ends when ``share`` (0 to 1) of the time left is spent, or with this one.

        A listing's part of a callback's budget, say, so that the cancels keep the rest; ending this
        deadline early (:meth:`end_now`) ends the part too.
        """
        return _Part(self, None if self.at is None else time.time() + share * max(self.at - time.time(), 0.0))


class _Part(Deadline):
    """A budget inside another deadline: it ends at its own time or the other's, whichever comes first."""

    def __init__(self, whole: Deadline, own: float | None) -> None:
        self._whole = whole
        super().__init__(own, last_call_sec=0.0)

    @property
    def at(self) -> float | None:
        ends = [at for at in (self._own, self._whole.at) if at is not None]
        return min(ends) if ends else None

    @at.setter
    def at(self, value: float | None) -> None:
        self._own = value


NO_DEADLINE = Deadline(None)
