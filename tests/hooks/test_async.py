"""The async twins: same answers and policy as the sync calls, async connection lookup, one shared pool per loop."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.client import settings_cache
from airflow_psopenai.client.pool import CONNECTIONS, shared_pool
from airflow_psopenai.exceptions import (
    PSOpenAICannotCancelError,
    PSOpenAIConfigurationError,
    PSOpenAINotFoundError,
    PSOpenAIRateLimitError,
    PSOpenAIServerError,
    PSOpenAITransportError,
)
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.hooks import psopenai as psopenai_module
from airflow_psopenai.testing import Fault
from tests.connections import retry_waits, use_emulator

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Connection

    from airflow_psopenai.testing import OpenAIEmulator

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("shared_pool")]


async def test_aget_and_acancel_batch(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    hook = PSOpenAIHook()
    assert (await hook.aget_batch(batch["id"]))["status"] == "in_progress"
    cancelled = await hook.acancel_batch(batch["id"])
    assert (cancelled["id"], cancelled["status"]) == (batch["id"], "cancelling")
    assert [(entry.method, entry.path, entry.status) for entry in emulator.journal] == [
        ("GET", f"/v1/batches/{batch['id']}", 200),
        ("POST", f"/v1/batches/{batch['id']}/cancel", 200),
    ]
    assert emulator.journal[0].headers["authorization"] == "<redacted>"
    assert emulator.journal[0].headers["user-agent"].startswith("airflow-psopenai/")


async def test_aget_and_acancel_thread_run(emulator: OpenAIEmulator) -> None:
    run = emulator.create_thread_run()
    hook = PSOpenAIHook()
    assert (await hook.aget_thread_run(run["thread_id"], run["id"]))["id"] == run["id"]
    assert (await hook.acancel_thread_run(run["thread_id"], run["id"]))["status"] == "cancelling"
    paths = [(entry.method, entry.path) for entry in emulator.journal]
    base = f"/v1/threads/{run['thread_id']}/runs/{run['id']}"
    assert paths == [("GET", base), ("POST", base + "/cancel")]
    assert all(entry.headers["openai-beta"] == "assistants=v2" for entry in emulator.journal)


async def test_async_errors_match_the_sync_ones(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch(status="completed")
    run = emulator.create_thread_run(status="cancelled")
    hook = PSOpenAIHook()
    with pytest.raises(PSOpenAICannotCancelError) as batch_refusal:
        await hook.acancel_batch(batch["id"])
    assert batch_refusal.value.status == "completed"
    with pytest.raises(PSOpenAICannotCancelError) as run_refusal:
        await hook.acancel_thread_run(run["thread_id"], run["id"])
    assert run_refusal.value.status == "cancelled"
    with pytest.raises(PSOpenAINotFoundError, match="batch 'batch_gone'"):
        await hook.aget_batch("batch_gone")


async def test_async_ids_are_percent_encoded(emulator: OpenAIEmulator) -> None:
    emulator.create_batch(batch_id="a/../b?c")
    assert (await PSOpenAIHook().aget_batch("a/../b?c"))["id"] == "a/../b?c"
    assert emulator.journal[0].raw_target == "/v1/batches/a%2F..%2Fb%3Fc"


async def test_connection_is_looked_up_once_and_never_on_the_event_loop(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """common-compat's lookup: the hook's async one where Airflow has it, else the sync one in a thread."""
    lookups = count_lookups(monkeypatch)
    loop_thread = threading.get_ident()
    blocking_on_the_loop: list[str] = []
    original = PSOpenAIHook.get_connection.__func__  # type: ignore[attr-defined]

    def sync_lookup(cls: type[PSOpenAIHook], conn_id: str) -> Connection:
        if threading.get_ident() == loop_thread:
            blocking_on_the_loop.append(conn_id)
        return original(cls, conn_id)  # type: ignore[no-any-return]

    monkeypatch.setattr(PSOpenAIHook, "get_connection", classmethod(sync_lookup))
    batch = emulator.create_batch()
    hook = PSOpenAIHook()
    await hook.aget_batch(batch["id"])
    await hook.acancel_batch(batch["id"])
    await hook.aget_batch(batch["id"])
    assert lookups == ["psopenai_default"]
    assert blocking_on_the_loop == []
    assert (await hook.asettings()).api_base == emulator.api_base


def count_lookups(monkeypatch: pytest.MonkeyPatch, held_until: asyncio.Event | None = None) -> list[str]:
    """Return the list to which every async connection lookup of the hook appends its conn_id.

    Each lookup takes 0.05 s, or lasts until ``held_until`` is set.
    """
    lookups: list[str] = []
    original = psopenai_module.get_async_connection

    async def counting(conn_id: str, hook: object = None) -> Connection:
        lookups.append(conn_id)
        if held_until is None:
            await asyncio.sleep(0.05)  # a lookup through the supervisor takes a while: let others overlap it
        else:
            await held_until.wait()
        return await original(conn_id, hook=hook)  # type: ignore[arg-type]

    monkeypatch.setattr(psopenai_module, "get_async_connection", counting)
    return lookups


async def test_hooks_of_one_loop_share_one_connection_lookup(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = count_lookups(monkeypatch)
    batches = [emulator.create_batch() for _ in range(100)]
    results = await asyncio.gather(*(PSOpenAIHook().aget_batch(batch["id"]) for batch in batches))
    assert [result["id"] for result in results] == [batch["id"] for batch in batches]
    assert lookups == ["psopenai_default"]
    # Other overrides or another connection are settings of their own.
    use_emulator(monkeypatch, emulator, conn_id="psopenai_other")
    await PSOpenAIHook(max_retry_count=3).aget_batch(batches[0]["id"])
    await PSOpenAIHook("psopenai_other").aget_batch(batches[0]["id"])
    assert lookups == ["psopenai_default", "psopenai_default", "psopenai_other"]


async def test_shared_settings_expire_so_a_changed_connection_is_picked_up(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cache's own clock, moved by hand: with a real short TTL a slow machine let it expire before
    # the "within the TTL" look (CI saw the new key there). The event loop keeps the real clock.
    now = [1000.0]
    monkeypatch.setattr(settings_cache, "time", SimpleNamespace(monotonic=lambda: now[0]))
    lookups = count_lookups(monkeypatch)
    batch = emulator.create_batch()
    await PSOpenAIHook().aget_batch(batch["id"])
    use_emulator(monkeypatch, emulator, password="sk-rotated")
    now[0] = 1000.0 + settings_cache.SETTINGS_TTL_SEC - 0.001
    assert (await PSOpenAIHook().asettings()).api_key == emulator.api_key  # within the TTL: the old key
    now[0] = 1000.0 + settings_cache.SETTINGS_TTL_SEC  # the entry's last moment has passed
    assert (await PSOpenAIHook().asettings()).api_key == "sk-rotated"
    assert lookups == ["psopenai_default", "psopenai_default"]


async def test_a_failed_lookup_is_not_shared_or_kept(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = count_lookups(monkeypatch)
    batch = emulator.create_batch()
    results = await asyncio.gather(
        *(PSOpenAIHook("psopenai_later").aget_batch(batch["id"]) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, PSOpenAIConfigurationError) for result in results)
    assert "'psopenai_later' is not defined" in str(results[0])
    use_emulator(monkeypatch, emulator, conn_id="psopenai_later")
    assert (await PSOpenAIHook("psopenai_later").aget_batch(batch["id"]))["id"] == batch["id"]
    assert lookups == ["psopenai_later", "psopenai_later"]


async def test_a_cancelled_waiter_does_not_cancel_the_shared_lookup(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookup_may_end = asyncio.Event()
    lookups = count_lookups(monkeypatch, held_until=lookup_may_end)
    batch = emulator.create_batch()
    first = asyncio.ensure_future(PSOpenAIHook().aget_batch(batch["id"]))
    second = asyncio.ensure_future(PSOpenAIHook().aget_batch(batch["id"]))
    await asyncio.sleep(0.01)  # both wait for the one lookup, which lasts until it is let go
    assert lookups == ["psopenai_default"]
    first.cancel()
    await asyncio.wait([first], timeout=5)
    assert first.cancelled()  # cancelled while the lookup it shared was still under way
    lookup_may_end.set()
    assert (await second)["id"] == batch["id"]
    assert lookups == ["psopenai_default"]


async def test_few_waits_reuse_one_connection(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    hook = PSOpenAIHook()
    for _ in range(5):
        await hook.aget_batch(batch["id"])
    assert [entry.connection for entry in emulator.journal] == [1] * 5


async def test_hooks_of_every_setting_share_one_pool(emulator: OpenAIEmulator) -> None:
    """Timeouts travel with each request: only a proxy makes a pool of its own."""
    batch = emulator.create_batch()
    for hook in (PSOpenAIHook(), PSOpenAIHook(max_retry_count=2), PSOpenAIHook(timeout_sec=7)):
        await hook.aget_batch(batch["id"])
    assert [entry.connection for entry in emulator.journal] == [1, 1, 1]
    assert shared_pool().open_connections == 1


async def test_timeout_0_means_no_read_limit_but_a_connect_timeout(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.latency(1.2))
    batch = emulator.create_batch()
    hook = PSOpenAIHook(timeout_sec=0)
    assert (await hook.aget_batch(batch["id"]))["id"] == batch["id"]
    timeout = (await hook.asettings()).timeout()
    assert (timeout.read, timeout.connect) == (None, 10.0)


async def test_50_concurrent_calls_overlap(emulator: OpenAIEmulator) -> None:
    batches = [emulator.create_batch() for _ in range(50)]
    emulator.latency = 0.2
    hooks = [PSOpenAIHook() for _ in range(5)]
    started = time.monotonic()
    results = await asyncio.gather(*(hooks[i % 5].aget_batch(batch["id"]) for i, batch in enumerate(batches)))
    elapsed = time.monotonic() - started
    assert [result["id"] for result in results] == [batch["id"] for batch in batches]
    assert len(emulator.journal) == 50
    assert elapsed < 2.5, f"50 calls of 0.2 s took {elapsed:.2f} s: they did not run concurrently"
    # Every connection the emulator saw was opened by the loop's one shared pool.
    assert shared_pool().open_connections == len({entry.connection for entry in emulator.journal})


async def test_async_rate_limit_is_retried_then_succeeds(
    emulator: OpenAIEmulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    batch = emulator.create_batch()
    emulator.add_fault(Fault.rate_limit(retry_after_ms=120))
    assert (await PSOpenAIHook(max_retry_count=1).aget_batch(batch["id"]))["id"] == batch["id"]
    assert [entry.status for entry in emulator.journal] == [429, 200]
    assert retry_waits(capfd, caplog) == [(0.12, 2, 2)]
    assert emulator.journal[1].time - emulator.journal[0].time >= 0.11


async def test_async_rate_limit_is_not_retried_by_default(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.rate_limit(retry_after_ms=1), times=3)
    with pytest.raises(PSOpenAIRateLimitError):
        await PSOpenAIHook().aget_batch("batch_1")
    assert len(emulator.journal) == 1


@pytest.mark.parametrize(
    ("fault", "error"),
    [(Fault.server_error(503), PSOpenAIServerError), (Fault.drop(), PSOpenAITransportError)],
    ids=["503", "drop"],
)
async def test_async_failures_are_retried_up_to_the_limit(
    emulator: OpenAIEmulator, fast_backoff: None, fault: Fault, error: type[Exception]
) -> None:
    emulator.add_fault(fault, times=10)
    with pytest.raises(error):
        await PSOpenAIHook(max_retry_count=2).acancel_batch("batch_1")
    assert len(emulator.journal) == 3


async def test_async_timeout_is_honoured(emulator: OpenAIEmulator) -> None:
    emulator.add_fault(Fault.hang(5))
    started = time.monotonic()
    with pytest.raises(PSOpenAITransportError, match=r"timed out .*timeout_sec=0\.5"):
        await PSOpenAIHook(timeout_sec=0.5).aget_batch("batch_1")
    assert time.monotonic() - started < 3  # not the 5 s hang


# -- the pool under cancellation and failure ------------------------------------------------------------------


async def test_a_cancellation_storm_leaves_every_connection_usable(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hundreds of calls cancelled at random points (a triggerer killing marked-failed tasks), then normal traffic."""
    import httpx

    original = httpx.create_ssl_context

    def slow_tls_context(*args: object, **kwargs: object) -> object:
        time.sleep(0.3)  # cancellations land while the pool waits for its TLS context, too
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "create_ssl_context", slow_tls_context)
    batch = emulator.create_batch()

    async def cancelled_after(delays: list[float | None]) -> list[asyncio.Future[dict[str, object]]]:
        """Start one call per delay, cancel each after its delay (None: never), wait until all ended."""
        calls = [asyncio.ensure_future(PSOpenAIHook().aget_batch(str(batch["id"]))) for _ in delays]
        for call, delay in zip(calls, delays, strict=True):
            if delay is not None:
                asyncio.get_running_loop().call_later(delay, call.cancel)
        await asyncio.gather(*calls, return_exceptions=True)
        return calls

    # Every call that opened a connection is cancelled while the TLS context loads.
    assert all(call.cancelled() for call in await cancelled_after([0.1] * 250))
    # Then two in three calls cancelled at random points: waiting for a connection, connecting, reading.
    emulator.latency = 0.05
    for seed in range(4):
        rng = random.Random(seed)
        storm = await cancelled_after([rng.uniform(0.0, 0.4) if i % 3 else None for i in range(300)])
        assert any(call.cancelled() for call in storm)
        assert all(not call.cancelled() and call.result()["id"] == batch["id"] for call in storm[::3])

    after = await asyncio.wait_for(
        asyncio.gather(*(PSOpenAIHook().aget_batch(str(batch["id"])) for _ in range(300))), timeout=15
    )
    assert {got["id"] for got in after} == {batch["id"]}
    pool = shared_pool((await PSOpenAIHook().asettings()).proxy)
    assert pool.open_connections == pool.idle_connections <= CONNECTIONS  # every connection came back


async def test_a_failed_tls_context_load_is_tried_again(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    import httpx

    original = httpx.create_ssl_context
    failures = [ssl.SSLError("the CA bundle is being rotated")]

    def flaky_tls_context(*args: object, **kwargs: object) -> object:
        if failures:
            raise failures.pop()
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "create_ssl_context", flaky_tls_context)
    batch = emulator.create_batch()
    with pytest.raises(PSOpenAITransportError, match="CA bundle is being rotated"):
        await PSOpenAIHook().aget_batch(str(batch["id"]))
    assert (await PSOpenAIHook().aget_batch(str(batch["id"])))["id"] == batch["id"]
