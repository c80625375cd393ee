"""Cancel throughput under faults: cancel 1,000 in-progress batches, 50 at once, with 10 % injected 429s.

The emulator (a separate process, 100 ms of latency on every answer) answers each cancel request with
probability 0.1 by a 429 ``rate_limit_exceeded`` carrying ``retry-after-ms`` of 20, 30, 40 or 50 ms
(seeded). Both sides retry up to 5 times and honour ``retry-after-ms``:

* ours: ``PSOpenAIHook.acancel_batch`` on one hook (``max_retry_count=5``), 50 coroutines at once
  (an ``asyncio.Semaphore``) in one event loop;
* the official: ``OpenAIHook.cancel_batch`` on one hook (the SDK's own retries, ``max_retries=5`` through
  the connection's ``openai_client_kwargs``; its default is 2), in a pool of 50 threads.

Reported: wall time, CPU seconds of the measuring process, requests sent, 429s, and whether every batch
was cancelled exactly once: one 200 answer to a cancel per batch in the journal, and a status history of
exactly ``in_progress`` then ``cancelling``.

Run alone: ``python -m benchmarks.cancel_throughput``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from benchmarks.common import (
    OFFICIAL_CONN_ID,
    OURS,
    OURS_CONN_ID,
    SIDES,
    EmulatorProcess,
    airflow_home,
    create_batches,
    current_rss_mb,
    exit_on_signals,
    load_average,
    peak_rss_mb,
    report,
    run_worker,
    worker_env,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

LATENCY_SEC = 0.1
# Long enough that no batch settles while the run lasts: each stays `cancelling` after its one cancel.
CANCEL_DELAY_SEC = 600.0
BATCHES = 1000
CONCURRENCY = 50
MAX_RETRIES = 5
FAULT_RATE = 0.1
FAULT_SEED = 20_260_826
RETRY_AFTER_MS = (20, 30, 40, 50)
CANCEL_PATH = "/v1/batches/*/cancel"
TIME_LIMIT_SEC = 120.0


# -- worker side --------------------------------------------------------------------------------------------


async def _cancel_ours(batch_ids: Sequence[str]) -> list[str]:
    from airflow_psopenai.client.pool import aclose_shared_clients
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook(OURS_CONN_ID, max_retry_count=MAX_RETRIES)
    gate = asyncio.Semaphore(CONCURRENCY)
    failures: list[str] = []

    async def cancel(batch_id: str) -> None:
        async with gate:
            try:
                await hook.acancel_batch(batch_id)
            except Exception as error:
                failures.append(f"{type(error).__name__}: {error}")

    try:
        await asyncio.wait_for(asyncio.gather(*(cancel(batch_id) for batch_id in batch_ids)), TIME_LIMIT_SEC)
    finally:
        await aclose_shared_clients()
    return failures


def _cancel_official(batch_ids: Sequence[str]) -> list[str]:
    from airflow.providers.openai.hooks.openai import OpenAIHook

    hook = OpenAIHook(conn_id=OFFICIAL_CONN_ID)
    failures: list[str] = []

    def cancel(batch_id: str) -> None:
        try:
            hook.cancel_batch(batch_id)
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        for _ in pool.map(cancel, batch_ids, timeout=TIME_LIMIT_SEC):
            pass
    hook.conn.close()
    return failures


def worker(arguments: dict[str, Any]) -> None:
    """Cancel the batches with one side and report the result as JSON on stdout."""
    import airflow.sdk

    side = arguments["side"]
    if side == OURS:
        import airflow_psopenai.hooks  # noqa: F401
    else:
        import airflow.providers.openai.hooks.openai  # noqa: F401
    batch_ids = [batch_id for batch_id, _ in create_batches(arguments["admin_base"], arguments["n"], "in_progress")]
    rss_before = current_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    failures = asyncio.run(_cancel_ours(batch_ids)) if side == OURS else _cancel_official(batch_ids)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    report(
        {
            "side": side,
            "n": len(batch_ids),
            "batch_ids": batch_ids,
            "seconds": elapsed,
            "cpu_sec": cpu,
            "rss_before_mb": rss_before,
            "peak_rss_mb": peak_rss_mb(),
            "failures": len(failures),
            "failure_examples": sorted(set(failures))[:3],
        }
    )


# -- parent side ----------------------------------------------------------------------------------------------


def _verify(emulator: EmulatorProcess, batch_ids: Sequence[str]) -> dict[str, Any]:
    """Read the journal and each batch's status history: was every batch cancelled exactly once?"""
    entries = emulator.journal(method="POST", path=CANCEL_PATH)
    statuses = Counter(entry["status"] for entry in entries)
    ok_per_batch = Counter(entry["path"].split("/")[3] for entry in entries if entry["status"] == 200)
    histories: Callable[[str], list[list[Any]]] = lambda batch_id: emulator.admin.get(f"/history/{batch_id}").json()  # noqa: E731
    bad_histories = [
        batch_id
        for batch_id in batch_ids
        if [status for _, status in histories(batch_id)] != ["in_progress", "cancelling"]
    ]
    return {
        "requests": len(entries),
        "requests_by_status": {str(status): count for status, count in sorted(statuses.items(), key=str)},
        "rate_limited": statuses.get(429, 0),
        "batches_with_one_ok_cancel": sum(1 for batch_id in batch_ids if ok_per_batch.get(batch_id) == 1),
        "batches_with_several_ok_cancels": sum(1 for batch_id in batch_ids if ok_per_batch.get(batch_id, 0) > 1),
        "batches_without_ok_cancel": sum(1 for batch_id in batch_ids if not ok_per_batch.get(batch_id)),
        "batches_with_unexpected_history": len(bad_histories),
    }


def measure(n: int = BATCHES) -> dict[str, Any]:
    """Run both sides against one emulator process (reset between them); return the results."""
    runs: list[dict[str, Any]] = []
    faults = [{"kind": "rate_limit", "retry_after_ms": ms} for ms in RETRY_AFTER_MS]
    with airflow_home() as home, EmulatorProcess(latency=LATENCY_SEC, cancel_delay=CANCEL_DELAY_SEC) as emulator:
        env = worker_env(home, emulator.api_base, official={"openai_client_kwargs": {"max_retries": MAX_RETRIES}})
        for side in SIDES:
            emulator.reset()
            emulator.set_random_faults(rate=FAULT_RATE, seed=FAULT_SEED, faults=faults, method="POST", path=CANCEL_PATH)
            load = load_average()[0]
            emulator_cpu = emulator.cpu_seconds()
            arguments = {"side": side, "n": n, "admin_base": f"{emulator.base_url}/_emulator"}
            result = run_worker("benchmarks.cancel_throughput", arguments, env, timeout=TIME_LIMIT_SEC + 120)
            result["emulator_cpu_sec"] = emulator.cpu_seconds() - emulator_cpu
            result["load_before"] = load
            result.update(_verify(emulator, result.pop("batch_ids")))
            result["exactly_once"] = (
                result["batches_with_one_ok_cancel"] == n
                and result["batches_with_unexpected_history"] == 0
                and result["failures"] == 0
            )
            result["cpu_ms_per_request"] = 1000 * result["cpu_sec"] / result["requests"] if result["requests"] else None
            runs.append(result)
            print(
                f"cancel_throughput {side:>8}: {result['seconds']:.2f} s, CPU {result['cpu_sec']:.2f} s, "
                f"{result['requests']} requests ({result['rate_limited']} 429s), failures {result['failures']}, "
                f"exactly once: {result['exactly_once']}, load {load:.2f}",
                file=sys.stderr,
                flush=True,
            )
        emulator.reset()
    return {
        "settings": {
            "batches": n,
            "concurrency": CONCURRENCY,
            "max_retries": MAX_RETRIES,
            "fault_rate": FAULT_RATE,
            "retry_after_ms": list(RETRY_AFTER_MS),
            "latency_sec": LATENCY_SEC,
        },
        "runs": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the results as JSON (or, with ``--worker``, be one measured process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=BATCHES)
    args = parser.parse_args(argv)
    exit_on_signals()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    print(json.dumps(measure(args.n), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
