"""A value per event loop (the shared pools, the settings cache) that ends when its loop ends.

The value is dropped, and its ``end`` awaited, when ``asyncio.run`` (or an ``asyncio.Runner``)
finishes the loop: an async generator registered with the loop is closed then, while the loop still
runs (``loop.shutdown_asyncgens()``). So a loop that ``dag.test()`` runs a trigger in, and a wait in a
worker, closes its connections and leaves nothing that keeps the loop alive. A loop run and closed by
hand, without ``shutdown_asyncgens()``, ends its value with :meth:`PerLoop.end`.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

_V = TypeVar("_V")


class PerLoop(Generic[_V]):
    """One value per running event loop, made on first use.

    :param make: Makes the value of a loop that has none.
    :param end: Awaited with the value when its loop ends (or :meth:`end` is called), or None.
    """

    def __init__(self, make: Callable[[], _V], end: Callable[[_V], Awaitable[object]] | None = None) -> None:
        self._make = make
        self._end = end
        # Weak keys, and values that hold no reference to their loop: the loop can be collected.
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[_V, AsyncGenerator[None]]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> _V:
        """Return the running loop's value, making it on first use."""
        loop = asyncio.get_running_loop()
        entry = self._values.get(loop)
        if entry is None:
            value = self._make()
            ending = self._ending(weakref.ref(loop), value)
            # Run up to its yield now: the loop registers it and closes it when it shuts its async generators down.
            with contextlib.suppress(StopIteration):
                ending.asend(None).send(None)
            entry = self._values[loop] = (value, ending)
        return entry[0]

    async def end(self) -> None:
        """End the running loop's value now; the next :meth:`get` makes a new one."""
        entry = self._values.get(asyncio.get_running_loop())
        if entry is not None:
            await entry[1].aclose()

    async def _ending(self, loop: weakref.ref[asyncio.AbstractEventLoop], value: _V) -> AsyncGenerator[None]:
        try:
            yield
        finally:
            running = loop()
            if running is not None and self._values.get(running, (None,))[0] is value:
                del self._values[running]
            if self._end is not None:
                await self._end(value)
