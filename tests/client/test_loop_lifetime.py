"""An event loop's pools and cached settings end with the loop: nothing keeps it alive, no socket stays open."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
import weakref
from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.hooks import PSOpenAIHook
from tests.connections import use_emulator

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_psopenai.testing import OpenAIEmulator
    from airflow_psopenai.testing.dag_tests import DagRunResult

    RunDag = Callable[..., DagRunResult]

pytestmark = pytest.mark.timeout(60)
LOOPS = 5
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp
SOCKETS_CLOSE_WITHIN_SEC = 30.0  # far above the milliseconds it takes; a leaked socket never closes


def open_tcp_connections() -> int:
    """Return how many TCP connections this process holds open, in any state but listening (Linux).

    A connection the server closed and the client never did stays here as ``CLOSE_WAIT``. Unix
    sockets are left out: each event loop and Airflow's in-process supervisor have their own pairs.
    """
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the descriptor listdir itself used, closed since
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link.removeprefix("socket:[").removesuffix("]"))
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                count += fields[9] in inodes and fields[3] != TCP_LISTEN
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
    sockets_before = open_tcp_connections()
    for _ in range(LOOPS):
        asyncio.run(poll())  # as dag.test() runs a deferred task's trigger, with no clean-up of ours
    gc.collect()
    # asgiref's thread (Airflow's async connection lookup) keeps the last loop it ran for until its next call.
    assert [loop() for loop in loops[:-1]] == [None] * (LOOPS - 1)
    assert open_tcp_connections() == sockets_before


def test_deferred_runs_under_run_dag_leave_no_socket_open(emulator: OpenAIEmulator, run_dag: RunDag) -> None:
    gc.collect()
    sockets_before = open_tcp_connections()
    for _ in range(3):
        batch = emulator.create_batch()
        assert run_dag("stop_batch_wait_deferrable", batch_id=batch["id"]).state == "success"
    gc.collect()
    # The emulator's thread closes its side of a connection once it reads the client's close: waited for.
    waited = time.monotonic()
    while open_tcp_connections() > sockets_before and time.monotonic() - waited < SOCKETS_CLOSE_WITHIN_SEC:
        time.sleep(0.05)
    assert open_tcp_connections() == sockets_before
