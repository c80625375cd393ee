"""An event loop's pools and cached settings end with the loop: nothing keeps it alive, no socket stays open."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import weakref
from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.hooks import PSOpenAIHook
from tests.hooks.conftest import use_emulator

if TYPE_CHECKING:
    from airflow_psopenai.testing import OpenAIEmulator

pytestmark = pytest.mark.timeout(60)
LOOPS = 5


def open_sockets() -> int:
    """Return how many sockets this process holds open (Linux: its file descriptors that are sockets)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used, closed since
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_loops_their_pools_and_sockets_are_freed_after_asyncio_run(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_emulator(monkeypatch, emulator)
    batch = emulator.create_batch()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def poll() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert (await PSOpenAIHook().aget_batch(batch["id"]))["id"] == batch["id"]

    gc.collect()
    sockets_before = open_sockets()
    for _ in range(LOOPS):
        asyncio.run(poll())  # as dag.test() runs a deferred task's trigger, with no clean-up of ours
    gc.collect()
    # asgiref's thread (Airflow's async connection lookup) keeps the last loop it ran for until its next call.
    assert [loop() for loop in loops[:-1]] == [None] * (LOOPS - 1)
    assert open_sockets() == sockets_before
