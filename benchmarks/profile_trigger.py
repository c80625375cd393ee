"""Profile our trigger at N waits in one event loop (not run by ``make bench``).

Where the time of ``ResourceStatusTrigger`` goes at large N: it led to the pool of single-connection
transports in ``airflow_psopenai/client/pool.py`` (httpcore rescans a client's connections for each
request) and to the shared connection lookup of ``airflow_psopenai/client/settings_cache.py``.

Examples::

    python -m benchmarks.profile_trigger --n 1000             # time, CPU and requests
    python -m benchmarks.profile_trigger --n 300 --profile    # cProfile's top functions
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
from typing import TYPE_CHECKING

from benchmarks.common import OURS_CONN_ID, EmulatorProcess, airflow_home, create_batches, worker_env

if TYPE_CHECKING:
    from collections.abc import Sequence


async def _run(admin_base: str, n: int, profiler: cProfile.Profile | None) -> dict[str, float]:
    from airflow_psopenai.client.pool import aclose_shared_clients
    from airflow_psopenai.triggers import ResourceStatusTrigger

    ids = [batch_id for batch_id, _ in create_batches(admin_base, n, "cancelling")]
    triggers = [
        ResourceStatusTrigger(resource="batch", ids={"batch_id": batch_id}, conn_id=OURS_CONN_ID, poll_interval=1.0)
        for batch_id in ids
    ]

    async def wait(trigger: ResourceStatusTrigger) -> None:
        async for _ in trigger.run():
            return

    start, cpu_start = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    await asyncio.wait_for(asyncio.gather(*(wait(trigger) for trigger in triggers)), 600)
    if profiler:
        profiler.disable()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    await aclose_shared_clients()
    return {"seconds": elapsed, "cpu_sec": cpu}


def main(argv: Sequence[str] | None = None) -> int:
    """Run N triggers in this process against an emulator process and print what they cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    args = parser.parse_args(argv)
    with airflow_home() as home, EmulatorProcess(latency=0.1, cancel_delay=2.0) as emulator:
        os.environ.update(worker_env(home, emulator.api_base, ours={"coalesce_polling": False}))
        import airflow.sdk  # noqa: F401  (the triggerer has it loaded; Airflow reads the environment now)

        profiler = cProfile.Profile() if args.profile else None
        result = asyncio.run(_run(f"{emulator.base_url}/_emulator", args.n, profiler))
        requests = len(emulator.journal(method="GET", path="/v1/batches/*"))
    summary = {
        "n": args.n,
        "seconds": round(result["seconds"], 2),
        "cpu_sec": round(result["cpu_sec"], 2),
        "requests": requests,
        "cpu_ms_per_request": round(1000 * result["cpu_sec"] / requests, 3) if requests else None,
        "load": os.getloadavg()[0],
    }
    print(json.dumps(summary), file=sys.stderr)
    if profiler:
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
