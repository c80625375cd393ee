"""Triggerer concurrency: N waits for a cancel in one asyncio event loop, ours against the official trigger.

For each side and N, a fresh process (so ``ru_maxrss`` is that run's own high-water mark) creates N
batches in status ``cancelling`` on the emulator (which turns them ``cancelled`` ``cancel_delay`` seconds
after their creation), then runs N triggers in one event loop, as the triggerer does, and reports:

* the seconds from the triggers' start until every event has fired (or the time limit: the run is capped);
* the CPU seconds of the measuring process during that time, and per poll request sent;
* the peak RSS of the process, and how much it grew during the run;
* how many events fired before their batch was cancelled (the official trigger treats ``cancelling``
  as terminal).

The requests are counted from the emulator's journal, which the parent process resets between runs.

Ours: ``ResourceStatusTrigger(resource="batch", ...)`` with the connection's ``coalesce_polling`` off
(one GET per wait and poll, as the official trigger does; ``coalesced_polling.py`` measures the
board that answers many waits from one list page), whose first polls come sooner than the interval
by design (0.25 s, then 0.5 s, then ``poll_interval``). The official: ``OpenAIBatchTrigger``, which
calls the blocking ``OpenAIHook.get_batch`` inside ``async def run()``.

Run alone: ``python -m benchmarks.trigger_concurrency [--n 1 10 100 1000] [--time-limit 120]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
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
    from collections.abc import Sequence

LATENCY_SEC = 0.1
CANCEL_DELAY_SEC = 2.0
POLL_INTERVAL_SEC = 1.0
DEFAULT_NS = (1, 10, 100, 1000)
DEFAULT_TIME_LIMIT_SEC = 120.0
POLL_COST_POLLS = 2000
# The triggers' own timeout, far beyond the time limit: the cap is the benchmark's, not the trigger's.
TRIGGER_TIMEOUT_SEC = 3600.0


# -- worker side (a fresh process per side and N) --------------------------------------------------------


def _triggers(side: str, batch_ids: Sequence[str]) -> list[Any]:
    if side == OURS:
        from airflow_psopenai.triggers import ResourceStatusTrigger

        deadline = time.time() + TRIGGER_TIMEOUT_SEC
        return [
            ResourceStatusTrigger(
                resource="batch",
                ids={"batch_id": batch_id},
                conn_id=OURS_CONN_ID,
                poll_interval=POLL_INTERVAL_SEC,
                deadline=deadline,
            )
            for batch_id in batch_ids
        ]
    from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

    return [
        OpenAIBatchTrigger(
            conn_id=OFFICIAL_CONN_ID, batch_id=batch_id, poll_interval=POLL_INTERVAL_SEC, timeout=TRIGGER_TIMEOUT_SEC
        )
        for batch_id in batch_ids
    ]


async def _measure(side: str, n: int, admin_base: str, time_limit: float) -> dict[str, Any]:
    created = create_batches(admin_base, n, "cancelling")
    creation_spread = created[-1][1] - created[0][1] if created else 0.0
    triggers = _triggers(side, [batch_id for batch_id, _ in created])
    fired: list[tuple[int, float, dict[str, Any]]] = []
    rss_before = current_rss_mb()

    async def run(index: int, trigger: Any) -> None:
        # The cap: a trigger not yet started when the time limit has passed is not started at all. (The
        # official trigger blocks the loop, so asyncio.wait's timeout alone could not stop the run.)
        if time.perf_counter() - start > time_limit:
            return
        async for event in trigger.run():
            fired.append((index, time.time(), event.payload))
            return

    wall_start, start, cpu_start = time.time(), time.perf_counter(), time.process_time()
    tasks = [asyncio.ensure_future(run(index, trigger)) for index, trigger in enumerate(triggers)]
    _, pending = await asyncio.wait(tasks, timeout=time_limit)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    failures = [repr(task.exception()) for task in tasks if not task.cancelled() and task.exception() is not None]
    if side == OURS:
        from airflow_psopenai.client.pool import aclose_shared_clients

        await aclose_shared_clients()
    # An event is premature when it fired before its batch could have turned cancelled (the batch was
    # created no earlier than its request was sent, and settles cancel_delay seconds after creation).
    premature = sum(1 for index, at, _ in fired if at < created[index][1] + CANCEL_DELAY_SEC)
    statuses: dict[str, int] = {}
    for _, _, payload in fired:
        key = str(payload.get("status"))
        statuses[key] = statuses.get(key, 0) + 1
    event_times = sorted(at - wall_start for _, at, _ in fired)
    return {
        "side": side,
        "n": n,
        "finished": not pending and len(fired) == n,
        "events": len(fired),
        "seconds": elapsed,
        "first_event_sec": event_times[0] if event_times else None,
        "last_event_sec": event_times[-1] if event_times else None,
        "cpu_sec": cpu,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "premature_events": premature,
        "event_statuses": statuses,
        "creation_spread_sec": creation_spread,
        "failures": failures[:3],
    }


async def _poll_cost(side: str, admin_base: str, polls: int) -> dict[str, Any]:
    """Return the CPU of one waiter polling ``polls`` times in a row, as its trigger's loop body does.

    Run with the emulator's latency at 0: the figure is the client side's cost of one status poll,
    without any pool contention (one waiter, one connection).
    """
    batch_id = create_batches(admin_base, 1, "cancelling")[0][0]
    if side == OURS:
        from airflow_psopenai.client.pool import aclose_shared_clients
        from airflow_psopenai.hooks import PSOpenAIHook
        from airflow_psopenai.resources import BATCH
        from airflow_psopenai.waiting.polling import StatusWatch

        hook = PSOpenAIHook(OURS_CONN_ID)
        watch = StatusWatch(BATCH, {"batch_id": batch_id}, hook.log)
        ids = {"batch_id": batch_id}
        watch.observe(await hook.aget_object(BATCH, ids))  # connection lookup, client, first connection
        cpu_start = time.process_time()
        for _ in range(polls):
            async with asyncio.timeout(60):  # as the trigger bounds each poll
                watch.observe(await hook.aget_object(BATCH, ids))
        cpu = time.process_time() - cpu_start
        await aclose_shared_clients()
    else:
        from airflow.providers.openai.hooks.openai import BatchStatus, OpenAIHook

        official = OpenAIHook(conn_id=OFFICIAL_CONN_ID)
        BatchStatus.is_in_progress(official.get_batch(batch_id).status)
        cpu_start = time.process_time()
        for _ in range(polls):
            BatchStatus.is_in_progress(official.get_batch(batch_id).status)
        cpu = time.process_time() - cpu_start
    return {"side": side, "polls": polls, "cpu_sec": cpu, "cpu_ms_per_poll": 1000 * cpu / polls}


def worker(arguments: dict[str, Any]) -> None:
    """Measure one side at one N (or its cost per poll) and report the result as JSON on stdout."""
    # Import what the triggerer has loaded before the triggers run, outside the measurement.
    import airflow.sdk

    if arguments["side"] == OURS:
        import airflow_psopenai.triggers  # noqa: F401
    else:
        import airflow.providers.openai.triggers.openai  # noqa: F401
    if arguments.get("polls"):
        report(asyncio.run(_poll_cost(arguments["side"], arguments["admin_base"], arguments["polls"])))
        return
    result = asyncio.run(_measure(arguments["side"], arguments["n"], arguments["admin_base"], arguments["time_limit"]))
    report(result)


# -- parent side ------------------------------------------------------------------------------------------


def measure(ns: Sequence[int] = DEFAULT_NS, time_limit: float = DEFAULT_TIME_LIMIT_SEC) -> dict[str, Any]:
    """Run every (side, N) against one emulator process; return the results and the settings used."""
    runs: list[dict[str, Any]] = []
    with airflow_home() as home, EmulatorProcess(latency=LATENCY_SEC, cancel_delay=CANCEL_DELAY_SEC) as emulator:
        # One GET per wait and poll: this measures the HTTP path of a poll (coalesced_polling.py the board).
        env = worker_env(home, emulator.api_base, ours={"coalesce_polling": False})
        for n in ns:
            for side in SIDES:
                emulator.reset()
                load = load_average()[0]
                emulator_cpu = emulator.cpu_seconds()
                arguments = {
                    "side": side,
                    "n": n,
                    "admin_base": f"{emulator.base_url}/_emulator",
                    "time_limit": time_limit,
                }
                result = run_worker("benchmarks.trigger_concurrency", arguments, env, timeout=time_limit + 120)
                polls = emulator.journal(method="GET", path="/v1/batches/*")
                result["requests"] = len(polls)
                result["requests_ok"] = sum(1 for entry in polls if entry["status"] == 200)
                result["cpu_ms_per_request"] = 1000 * result["cpu_sec"] / len(polls) if polls else None
                result["emulator_cpu_sec"] = emulator.cpu_seconds() - emulator_cpu
                result["load_before"] = load
                runs.append(result)
                print(_summary(result), file=sys.stderr, flush=True)
        # The client's cost of one poll, without pool contention: one waiter, no latency.
        emulator.settings(latency=0.0)
        poll_cost = {}
        for side in SIDES:
            emulator.reset()
            arguments = {"side": side, "polls": POLL_COST_POLLS, "admin_base": f"{emulator.base_url}/_emulator"}
            poll_cost[side] = run_worker("benchmarks.trigger_concurrency", arguments, env, timeout=300)
            poll_cost[side]["load_before"] = load_average()[0]
            print(
                f"trigger_concurrency {side:>8} one waiter: {poll_cost[side]['cpu_ms_per_poll']:.3f} ms CPU per poll",
                file=sys.stderr,
                flush=True,
            )
        emulator.reset()
    return {
        "poll_cost": poll_cost,
        "settings": {
            "poll_cost_polls": POLL_COST_POLLS,
            "latency_sec": LATENCY_SEC,
            "cancel_delay_sec": CANCEL_DELAY_SEC,
            "poll_interval_sec": POLL_INTERVAL_SEC,
            "time_limit_sec": time_limit,
            "ns": list(ns),
        },
        "runs": runs,
    }


def _summary(result: dict[str, Any]) -> str:
    state = "" if result["finished"] else f" (did not finish: {result['events']} of {result['n']} events)"
    return (
        f"trigger_concurrency {result['side']:>8} N={result['n']:<5} {result['seconds']:8.2f} s{state}, "
        f"CPU {result['cpu_sec']:.2f} s, {result['requests']} requests, peak RSS {result['peak_rss_mb']:.0f} MiB, "
        f"premature events {result['premature_events']}, load {result['load_before']:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the results as JSON (or, with ``--worker``, be one measured process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_NS))
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT_SEC)
    args = parser.parse_args(argv)
    exit_on_signals()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    print(json.dumps(measure(args.n, args.time_limit), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
