"""A thousand clients polling at once on loopback."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from airflow_psopenai.testing import OpenAIEmulator

CLIENTS = 1000
POLLS = 3


async def test_a_thousand_concurrent_polling_clients(openai_emulator: OpenAIEmulator) -> None:
    batch = openai_emulator.create_batch()
    headers = {"Authorization": f"Bearer {openai_emulator.api_key}"}
    # One client each, as separate pollers would be; sharing the TLS context keeps 1,000 clients cheap
    # (one client with 1,000 connections is far slower: httpcore's pool is quadratic in its size).
    tls = ssl.create_default_context()
    started = asyncio.Event()

    async def poll() -> list[int]:
        async with httpx.AsyncClient(
            base_url=openai_emulator.api_base, headers=headers, verify=tls, timeout=30
        ) as client:
            await started.wait()
            return [(await client.get(f"/batches/{batch['id']}")).status_code for _ in range(POLLS)]

    tasks = [asyncio.ensure_future(poll()) for _ in range(CLIENTS)]
    started.set()
    results = await asyncio.gather(*tasks)
    assert results == [[200] * POLLS] * CLIENTS
    entries = openai_emulator.journal
    assert len(entries) == CLIENTS * POLLS
    assert {entry.status for entry in entries} == {200}
