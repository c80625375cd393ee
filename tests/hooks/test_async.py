"""The async twins: same answers and policy as the sync calls, async connection lookup, one shared pool per loop."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.exceptions import (
    PSOpenAICannotCancelError,
    PSOpenAIConfigurationError,
    PSOpenAINotFoundError,
    PSOpenAIRateLimitError,
    PSOpenAIServerError,
    PSOpenAITransportError,
)
from airflow_psopenai.hooks import PSOpenAIHook, settings_cache
from airflow_psopenai.hooks.pool import shared_pool, shared_pool_count
from airflow_psopenai.testing import Fault
from tests.hooks.conftest import retry_waits, use_emulator

if TYPE_CHECKING:
    from airflow.sdk import Connection

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


async def test_connection_is_looked_up_with_the_async_api_once(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []
    original = PSOpenAIHook.aget_connection.__func__  # type: ignore[attr-defined]

    async def counting(cls: type[PSOpenAIHook], conn_id: str) -> Connection:
        lookups.append(conn_id)
        return await original(cls, conn_id)

    def blocking(cls: type[PSOpenAIHook], conn_id: str) -> Connection:
        raise AssertionError("the synchronous connection lookup blocks the event loop")

    monkeypatch.setattr(PSOpenAIHook, "aget_connection", classmethod(counting))
    monkeypatch.setattr(PSOpenAIHook, "get_connection", classmethod(blocking))
    batch = emulator.create_batch()
    hook = PSOpenAIHook()
    await hook.aget_batch(batch["id"])
    await hook.acancel_batch(batch["id"])
    await hook.aget_batch(batch["id"])
    assert lookups == ["psopenai_default"]
    assert (await hook.asettings()).api_base == emulator.api_base


def count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Return the list to which every async connection lookup of the hook appends its conn_id."""
    lookups: list[str] = []
    original = PSOpenAIHook.aget_connection.__func__  # type: ignore[attr-defined]

    async def counting(cls: type[PSOpenAIHook], conn_id: str) -> Connection:
        lookups.append(conn_id)
        await asyncio.sleep(0.05)  # a lookup through the supervisor takes a while: let others overlap it
        return await original(cls, conn_id)

    monkeypatch.setattr(PSOpenAIHook, "aget_connection", classmethod(counting))
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
    monkeypatch.setattr(settings_cache, "SETTINGS_TTL_SEC", 0.2)
    lookups = count_lookups(monkeypatch)
    batch = emulator.create_batch()
    await PSOpenAIHook().aget_batch(batch["id"])
    use_emulator(monkeypatch, emulator, password="sk-rotated")
    assert (await PSOpenAIHook().asettings()).api_key == emulator.api_key  # within the TTL: the old key
    await asyncio.sleep(0.25)
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
    lookups = count_lookups(monkeypatch)
    batch = emulator.create_batch()
    first = asyncio.ensure_future(PSOpenAIHook().aget_batch(batch["id"]))
    second = asyncio.ensure_future(PSOpenAIHook().aget_batch(batch["id"]))
    await asyncio.sleep(0.01)  # both wait for the one lookup
    first.cancel()
    assert (await second)["id"] == batch["id"]
    assert first.cancelled()
    assert lookups == ["psopenai_default"]


async def test_few_waits_reuse_one_connection(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    hook = PSOpenAIHook()
    for _ in range(5):
        await hook.aget_batch(batch["id"])
    assert [entry.connection for entry in emulator.journal] == [1] * 5


async def test_hooks_with_the_same_settings_share_one_pool(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    first, second = PSOpenAIHook(), PSOpenAIHook(max_retry_count=2)
    await first.aget_batch(batch["id"])
    await second.aget_batch(batch["id"])
    assert shared_pool_count() == 1
    settings = await first.asettings()
    assert shared_pool(settings.timeout()) is shared_pool((await second.asettings()).timeout())
    await PSOpenAIHook(timeout_sec=7).aget_batch(batch["id"])
    assert shared_pool_count() == 2  # one pool per distinct timeout setting


async def test_pooled_client_has_no_read_limit_for_timeout_0(emulator: OpenAIEmulator) -> None:
    settings = await PSOpenAIHook(timeout_sec=0).asettings()
    pool = shared_pool(settings.timeout())
    assert pool.timeout.read is None
    assert pool.timeout.connect == 10.0
    assert pool.timeout.pool is None  # waiting for our own free connection is never a timeout


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
    assert shared_pool_count() == 1


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
    assert time.monotonic() - started < 1.5


# -- proxies from the environment, as httpx's own clients read them -----------------------------------------


@pytest.fixture
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("no_proxy", raising=False)


@pytest.mark.usefixtures("no_proxy_variables")
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_calls_go_through_the_environment_proxy(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    batch = emulator.create_batch()
    # The emulator serves absolute-form targets too, so it can stand in for the proxy: the API host
    # itself does not exist, only the proxy can have answered.
    monkeypatch.setenv("HTTP_PROXY", emulator.base_url)
    hook = PSOpenAIHook(api_base="http://api.example.invalid/v1")
    got = hook.get_batch(batch["id"]) if mode == "sync" else await hook.aget_batch(batch["id"])
    assert got["id"] == batch["id"]
    assert [entry.raw_target for entry in emulator.journal] == [f"http://api.example.invalid/v1/batches/{batch['id']}"]


@pytest.mark.usefixtures("no_proxy_variables")
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_no_proxy_exempts_a_host(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    batch = emulator.create_batch()
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: used, it would fail
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    hook = PSOpenAIHook()
    got = hook.get_batch(batch["id"]) if mode == "sync" else await hook.aget_batch(batch["id"])
    assert got["id"] == batch["id"]
    assert [entry.raw_target for entry in emulator.journal] == [f"/v1/batches/{batch['id']}"]
    monkeypatch.delenv("NO_PROXY")
    with pytest.raises(PSOpenAITransportError):
        await PSOpenAIHook(timeout_sec=5).aget_batch(batch["id"])  # other settings: a lookup that sees the proxy
