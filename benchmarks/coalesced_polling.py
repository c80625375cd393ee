"""Coalesced status polling: N batch waits in one event loop, via the status board, one GET each, the official trigger.

For each mode and N, a fresh process runs N triggers in one event loop (as a triggerer does) against
the emulator in its own process (100 ms latency, ``poll_interval=5``). The batches were cancelled
before the waits start, in 20 groups whose cancels take 15 to 34 s, so they settle at spread-out times.
Reported, from the emulator's journal and the worker's own CPU samples:

* requests per round: GET requests (list pages and single batches) per ``poll_interval`` while every
  batch still waits (whole rounds from 20 s after the start, when the first round is over even at
  N = 10,000, until the first batch settles);
* CPU per round in that window, and per waiting batch per round;
* peak RSS of the worker;
* detection delay: from a batch settling (the emulator's history) to its event firing (median, max),
  and how many events fired before their batch had settled (the official trigger ends at ``cancelling``).

Modes: ``coalesced`` (the default), ``per_id`` (the connection's ``coalesce_polling`` off: one GET per
wait and round, as before the board) and ``official`` (``OpenAIBatchTrigger``, N up to 1,000, capped by
the time limit). ``old``: the waited batches have 300 newer batches in between (coalesced and per-ID).

Run alone: ``python -m benchmarks.coalesced_polling [--n 100 1000 10000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from benchmarks.common import (
    API_KEY,
    OFFICIAL,
    OFFICIAL_CONN_ID,
    OURS,
    OURS_CONN_ID,
    EmulatorProcess,
    airflow_home,
    create_batches,
    exit_on_signals,
    peak_rss_mb,
    report,
    run_worker,
    worker_env,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

LATENCY_SEC = 0.1
POLL_INTERVAL_SEC = 5.0
SETTLE_GROUPS = 20
FIRST_SETTLE_SEC = 40.0  # after the last cancel; the last group settles 59 s after it
# The first round walks the list from its head (about 15 s for 10,000 batches at 100 ms a page).
STEADY_FROM_SEC = 20.0
CANCEL_SEC_ESTIMATE = 0.002  # what one cancel takes the parent, to aim each group's settling
OLD_GAP = 300
OFFICIAL_MAX_N = 1000
DEFAULT_NS = (100, 1000, 10000)
TIME_LIMIT_SEC = 100.0
COALESCED, PER_ID = "coalesced", "per_id"
# The triggers' own deadline, far beyond the run: the cap is the benchmark's.
TRIGGER_TIMEOUT_SEC = 3600.0


# -- worker side ----------------------------------------------------------------------------------------------


def _triggers(mode: str, batch_ids: Sequence[str]) -> list[Any]:
    if mode == OFFICIAL:
        from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger

        return [
            OpenAIBatchTrigger(
                conn_id=OFFICIAL_CONN_ID,
                batch_id=batch_id,
                poll_interval=POLL_INTERVAL_SEC,
                timeout=TRIGGER_TIMEOUT_SEC,
            )
            for batch_id in batch_ids
        ]
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


async def _measure(mode: str, batch_ids: list[str], time_limit: float) -> dict[str, Any]:
    triggers = _triggers(mode, batch_ids)
    fired: dict[str, float] = {}
    samples: list[tuple[float, float]] = []

    async def sample() -> None:
        while True:
            samples.append((time.time(), time.process_time()))
            await asyncio.sleep(0.25)

    async def run(batch_id: str, trigger: Any) -> None:
        if time.perf_counter() - start > time_limit:  # the official trigger blocks the loop: a hard cap
            return
        async for _event in trigger.run():
            fired[batch_id] = time.time()
            return

    sampler = asyncio.ensure_future(sample())
    started, start = time.time(), time.perf_counter()
    tasks = [
        asyncio.ensure_future(run(batch_id, trigger)) for batch_id, trigger in zip(batch_ids, triggers, strict=True)
    ]
    _, pending = await asyncio.wait(tasks, timeout=time_limit)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    sampler.cancel()
    samples.append((time.time(), time.process_time()))
    if mode != OFFICIAL:
        from airflow_psopenai.client.pool import aclose_shared_clients

        await aclose_shared_clients()
    failures = [repr(task.exception()) for task in tasks if not task.cancelled() and task.exception() is not None]
    return {
        "started": started,
        "fired": fired,
        "samples": samples,
        "peak_rss_mb": peak_rss_mb(),
        "finished": not pending and len(fired) == len(batch_ids),
        "failures": failures[:3],
    }


def worker(arguments: dict[str, Any]) -> None:
    """Run one mode's waits and report what happened as JSON."""
    import airflow.sdk

    if arguments["mode"] == OFFICIAL:
        import airflow.providers.openai.triggers.openai  # noqa: F401
    else:
        import airflow_psopenai.triggers  # noqa: F401
    batch_ids = json.loads(Path(arguments["ids_file"]).read_text())
    report(asyncio.run(_measure(arguments["mode"], batch_ids, arguments["time_limit"])))


# -- parent side -------------------------------------------------------------------------------------------------


def _api(emulator: EmulatorProcess) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(urlsplit(emulator.api_base).netloc, timeout=60)


def _cancel_in_groups(emulator: EmulatorProcess, batch_ids: Sequence[str]) -> float:
    """Cancel the batches group by group, each group aimed to settle one second after the one before.

    Group ``g`` settles about ``FIRST_SETTLE_SEC + g`` seconds after the last cancel (a cancel settles
    ``cancel_delay`` after it was sent, and sending 10,000 takes a while). Returns when the last was sent.
    """
    connection = _api(emulator)
    path = urlsplit(emulator.api_base).path
    headers = {"Authorization": f"Bearer {API_KEY}"}
    last_sent = time.time() + len(batch_ids) * CANCEL_SEC_ESTIMATE
    try:
        for group in range(SETTLE_GROUPS):
            emulator.settings(cancel_delay=max(1.0, last_sent + FIRST_SETTLE_SEC + group - time.time()))
            for batch_id in batch_ids[group::SETTLE_GROUPS]:
                connection.request("POST", f"{path}/batches/{batch_id}/cancel", headers=headers)
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"Cancelling {batch_id} failed: HTTP {response.status}")
    finally:
        connection.close()
    return time.time()


def _settled_at(emulator: EmulatorProcess, batch_ids: Sequence[str], cancelled_by: float) -> dict[str, float]:
    """Return when each batch turned cancelled, from the emulator's history (waiting for the last one first)."""
    time.sleep(max(0.0, cancelled_by + FIRST_SETTLE_SEC + SETTLE_GROUPS + 1 - time.time()))
    connection = http.client.HTTPConnection(urlsplit(emulator.base_url).netloc, timeout=60)
    settled: dict[str, float] = {}
    try:
        for batch_id in batch_ids:
            connection.request("GET", f"/_emulator/history/{batch_id}")
            response = connection.getresponse()
            history = json.loads(response.read())
            settled[batch_id] = next(at for at, status in history if status == "cancelled")
    finally:
        connection.close()
    return settled


def _case(emulator: EmulatorProcess, home: Path, mode: str, n: int, *, old: bool) -> dict[str, Any]:
    emulator.reset()
    emulator.settings(latency=0.0)
    waited = [batch_id for batch_id, _ in create_batches(f"{emulator.base_url}/_emulator", n, "in_progress")]
    if old:
        create_batches(f"{emulator.base_url}/_emulator", OLD_GAP, "in_progress")
    cancelled_by = _cancel_in_groups(emulator, waited)
    emulator.settings(latency=LATENCY_SEC)
    extra = {OURS: {"coalesce_polling": mode == COALESCED}}
    env = worker_env(home, emulator.api_base, **extra)
    emulator_cpu = emulator.cpu_seconds()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as ids_file:
        json.dump(waited, ids_file)
    try:
        arguments = {"mode": mode, "ids_file": ids_file.name, "time_limit": TIME_LIMIT_SEC}
        result = run_worker("benchmarks.coalesced_polling", arguments, env, timeout=TIME_LIMIT_SEC + 120)
    finally:
        Path(ids_file.name).unlink()
    emulator_cpu = emulator.cpu_seconds() - emulator_cpu
    emulator.settings(latency=0.0)
    gets = emulator.journal(method="GET", path="/v1/batches*")
    settled = _settled_at(emulator, waited, cancelled_by)
    return _figures(mode, n, old=old, result=result, gets=gets, settled=settled, emulator_cpu=emulator_cpu)


def _figures(
    mode: str,
    n: int,
    *,
    old: bool,
    result: dict[str, Any],
    gets: list[dict[str, Any]],
    settled: dict[str, float],
    emulator_cpu: float,
) -> dict[str, Any]:
    started = result["started"]
    # Whole rounds: each wait polls exactly once in each poll_interval of the window.
    rounds = math.floor((min(settled.values()) - started - STEADY_FROM_SEC) / POLL_INTERVAL_SEC)
    window = (started + STEADY_FROM_SEC, started + STEADY_FROM_SEC + rounds * POLL_INTERVAL_SEC)
    in_window = [entry for entry in gets if window[0] <= entry["time"] < window[1]]
    cpu_points = [(at, cpu) for at, cpu in result["samples"] if window[0] <= at <= window[1]]
    cpu_per_round = (cpu_points[-1][1] - cpu_points[0][1]) / rounds if len(cpu_points) > 1 and rounds > 0 else None
    delays = sorted(result["fired"][batch_id] - at for batch_id, at in settled.items() if batch_id in result["fired"])
    premature = sum(1 for delay in delays if delay < 0)
    delays = [delay for delay in delays if delay >= 0]
    return {
        "mode": mode,
        "n": n,
        "old": old,
        "finished": result["finished"],
        "events": len(result["fired"]),
        "failures": result["failures"],
        "window_sec": window[1] - window[0],
        "requests_per_round": len(in_window) / rounds if rounds > 0 else None,
        "list_pages_per_round": sum(1 for e in in_window if e["path"] == "/v1/batches") / rounds
        if rounds > 0
        else None,
        "target_requests_per_round": math.ceil(n / 100) + 2,
        "requests_total": len(gets),
        "cpu_ms_per_round": None if cpu_per_round is None else 1000 * cpu_per_round,
        "cpu_ms_per_batch_round": None if cpu_per_round is None else 1000 * cpu_per_round / n,
        "peak_rss_mb": result["peak_rss_mb"],
        "detection_median_sec": statistics.median(delays) if delays else None,
        "detection_max_sec": delays[-1] if delays else None,
        "fired_before_settled": premature,
        "emulator_cpu_sec": emulator_cpu,
    }


def measure(ns: Sequence[int] = DEFAULT_NS) -> dict[str, Any]:
    """Run every mode at every N, then the old-batches case; return the figures and the settings."""
    runs: list[dict[str, Any]] = []
    with airflow_home() as home, EmulatorProcess(latency=LATENCY_SEC, cancel_delay=FIRST_SETTLE_SEC) as emulator:
        cases = [
            (mode, n, False)
            for n in ns
            for mode in (COALESCED, PER_ID, OFFICIAL)
            if mode != OFFICIAL or n <= OFFICIAL_MAX_N
        ]
        cases += [(COALESCED, min(ns), True), (PER_ID, min(ns), True)]
        for mode, n, old in cases:
            figures = _case(emulator, home, mode, n, old=old)
            runs.append(figures)
            print(_summary(figures), file=sys.stderr, flush=True)
        emulator.reset()
    return {
        "settings": {
            "latency_sec": LATENCY_SEC,
            "poll_interval_sec": POLL_INTERVAL_SEC,
            "settle_sec": [FIRST_SETTLE_SEC, FIRST_SETTLE_SEC + SETTLE_GROUPS - 1],
            "old_gap": OLD_GAP,
            "time_limit_sec": TIME_LIMIT_SEC,
            "ns": list(ns),
        },
        "runs": runs,
    }


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary(run: dict[str, Any]) -> str:
    state = "" if run["finished"] else f" (did not finish: {run['events']} of {run['n']} events)"
    return (
        f"coalesced_polling {run['mode']:>9}{' old' if run['old'] else ''} N={run['n']:<6} "
        f"{_number(run['requests_per_round'])} requests/round (target {run['target_requests_per_round']}), "
        f"CPU {_number(run['cpu_ms_per_round'])} ms/round ({_number(run['cpu_ms_per_batch_round'], 3)} ms/batch), "
        f"RSS {run['peak_rss_mb']:.0f} MiB, detection {_number(run['detection_median_sec'], 2)} s median, "
        f"{_number(run['detection_max_sec'], 2)} s max{state}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the figures as JSON (or, with ``--worker``, be one measured process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, nargs="+", default=list(DEFAULT_NS))
    args = parser.parse_args(argv)
    exit_on_signals()
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    print(json.dumps(measure(args.n), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
