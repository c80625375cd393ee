"""What the emulator's HTTP server costs: its own CPU per request under many concurrent clients.

The emulator runs in its own process (as in every benchmark); N clients, each on a connection of
its own, retrieve a batch ``--requests`` times in a row. Printed: requests, wall time, the emulator
process's CPU seconds (user + system, from /proc) and CPU milliseconds per request.

Run: ``python -m benchmarks.emulator_cost [--clients 1000] [--requests 5] [--latency 0.1]``
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httpx
import psutil

from benchmarks.common import API_KEY, EmulatorProcess, create_batches


async def _load(api_base: str, batch_ids: list[str], requests: int) -> int:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    tls = httpx.create_ssl_context()  # unused on http://, but made per client unless given

    async def one_client(batch_id: str) -> int:
        # A client of its own per connection: one httpx pool of 1,000 connections costs the client more
        # CPU than the server (httpcore rescans its connections for each request).
        async with httpx.AsyncClient(base_url=api_base, headers=headers, verify=tls, timeout=120) as client:
            return sum([(await client.get(f"/batches/{batch_id}")).status_code == 200 for _ in range(requests)])

    return sum(await asyncio.gather(*(one_client(batch_id) for batch_id in batch_ids)))


def measure(clients: int, requests: int, latency: float) -> dict[str, float]:
    """Return the emulator's CPU cost of ``clients`` x ``requests`` retrieves."""
    with EmulatorProcess(latency=latency, cancel_delay=60) as emulator:
        batch_ids = [
            batch_id for batch_id, _ in create_batches(f"{emulator.base_url}/_emulator", clients, "in_progress")
        ]
        process = psutil.Process(emulator.pid)
        before = process.cpu_times()
        started = time.monotonic()
        answered = asyncio.run(_load(emulator.api_base, batch_ids, requests))
        wall = time.monotonic() - started
        after = process.cpu_times()
    cpu = (after.user - before.user) + (after.system - before.system)
    total = clients * requests
    if answered != total:
        raise RuntimeError(f"{total - answered} of {total} requests were not answered 200")
    return {"requests": total, "wall_s": wall, "cpu_s": cpu, "cpu_ms_per_request": 1000 * cpu / total}


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    figures = measure(args.clients, args.requests, args.latency)
    print(
        f"{figures['requests']} requests from {args.clients} clients ({args.latency:g} s latency): "
        f"{figures['wall_s']:.2f} s, emulator CPU {figures['cpu_s']:.2f} s, "
        f"{figures['cpu_ms_per_request']:.3f} ms per request"
    )


if __name__ == "__main__":
    main()
