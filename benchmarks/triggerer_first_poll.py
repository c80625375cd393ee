"""A fresh triggerer's first poll: how long after a trigger starts its first request reaches the API.

One Airflow of the end-to-end suite (``tests/e2e/stack.py``) runs ``e2e_psopenai_mark_failed``'s
deferred wait (``poll_interval`` 1 s) three times against the emulator (no latency; the batches stay
``cancelling``): the first trigger of a running triggerer, a second one, and the first trigger of a
triggerer started while the task waits deferred (a restart). For each: the seconds from the deferral
(the cancel request, or the new triggerer's start) to the trigger's first log line (the triggerer's
"trigger ... starting"; loading the trigger's module comes before it), and from there to the first
GET of its batch in the emulator's journal (the first connection lookup, the shared pool's TLS
context, the first request). Target: the first poll within ``poll_interval`` plus a second of the
trigger's start.

Run alone: ``python -m benchmarks.triggerer_first_poll``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from benchmarks.common import exit_on_signals, load_average, wait_for_quiet_machine
from tests.e2e.checks import log_events
from tests.e2e.stack import AirflowStack, running, wait_until

DAG_ID = "e2e_psopenai_mark_failed"
TASK_ID = "stop_and_wait"
POLL_INTERVAL_SEC = 1.0  # the DAG's
CANCEL_DELAY_SEC = 600.0  # the batches stay cancelling while measured


def _seconds(stack: AirflowStack, *, fresh_triggerer: bool) -> dict[str, float]:
    """Run the DAG once and time its wait: the trigger's start and its first poll.

    :param fresh_triggerer: Stop the triggerer before the run and start a new one once the task has
        deferred (the start of a triggerer with triggers waiting, as after a restart).
    """
    from datetime import datetime

    if fresh_triggerer:
        stack.stop_triggerer()
    batch_id = stack.create_batch()["id"]
    run_id = stack.trigger(DAG_ID, {"batch_id": batch_id})
    wait_until(lambda: stack.task_instances(DAG_ID, run_id)[TASK_ID].get("state") == "deferred", 180, "the deferral")
    deferred = stack.batch_cancels(batch_id)[0]["time"]  # the task defers right after its cancel
    if fresh_triggerer:
        deferred = time.time()  # from the new triggerer's start
        stack.start_triggerer()

    def trigger_log() -> list[dict[str, Any]] | None:
        text = stack.task_log(DAG_ID, run_id, TASK_ID, trigger=True)
        return [event for event in log_events(text) if "timestamp" in event] or None

    def first_poll_after_the_cancel() -> float | None:
        cancel = stack.batch_cancels(batch_id)[0]["time"]
        polls = [t for t in stack.batch_polls(batch_id) if t > cancel]
        return polls[0] if polls else None

    polled = wait_until(first_poll_after_the_cancel, 300, f"the first poll of {batch_id}")
    started = datetime.fromisoformat(wait_until(trigger_log, 60, "the trigger's log")[0]["timestamp"]).timestamp()
    stack.set_task_state(DAG_ID, run_id, TASK_ID, "failed")
    stack.wait_run(DAG_ID, run_id, timeout=120)
    return {"until_trigger_start": started - deferred, "start_to_first_poll": polled - started}


def measure() -> dict[str, Any]:
    """Return, for each case, the seconds until the trigger started and from its start to its first poll."""
    load = wait_for_quiet_machine()
    with running(AirflowStack(), CANCEL_DELAY_SEC, {DAG_ID}) as stack:
        cases = {
            "first trigger of a running triggerer": _seconds(stack, fresh_triggerer=False),
            "second trigger": _seconds(stack, fresh_triggerer=False),
            "first trigger of a triggerer started with it waiting": _seconds(stack, fresh_triggerer=True),
        }
    for case, seconds in cases.items():
        print(
            f"triggerer_first_poll: {case}: started {seconds['until_trigger_start']:.2f} s after the deferral "
            f"(or the triggerer's start), first poll {seconds['start_to_first_poll']:.2f} s after its start",
            file=sys.stderr,
            flush=True,
        )
    return {"poll_interval": POLL_INTERVAL_SEC, "load_before": load, "load_after": load_average()[0], "cases": cases}


TARGET_EXTRA_SEC = 1.0  # the first poll within poll_interval plus this of the trigger's start


def markdown(result: dict[str, Any]) -> list[str]:
    """Return the report's section."""
    lines = [
        "### 6. A triggerer's first poll (ours, on a real Airflow)",
        "",
        f"`poll_interval` {result['poll_interval']:g} s; load {result['load_before']:.2f} before, "
        f"{result['load_after']:.2f} after.",
        "",
        "| case | trigger started after the deferral (or the triggerer's start) "
        "| first poll after the trigger's start |",
        "|---|---|---|",
    ]
    for case, seconds in result["cases"].items():
        lines.append(f"| {case} | {seconds['until_trigger_start']:.2f} s | {seconds['start_to_first_poll']:.2f} s |")
    return [*lines, ""]


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the verdict: every case's first poll within ``poll_interval`` + 1 s of its trigger's start."""
    worst = max(seconds["start_to_first_poll"] for seconds in result["cases"].values())
    limit = result["poll_interval"] + TARGET_EXTRA_SEC
    return [
        {
            "target": f"Triggerer: first poll within poll_interval + {TARGET_EXTRA_SEC:g} s of the trigger's start",
            "measured": f"at most {worst:.2f} s (a fresh triggerer's first trigger included)",
            "met": worst <= limit,
        }
    ]


def main(argv: list[str] | None = None) -> int:
    """Measure and print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    exit_on_signals()
    print(json.dumps(measure(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
