"""Bulk cancel on a real Airflow: one StopBatchesOperator for a set of batches against one mapped task per batch.

One Airflow of the end-to-end suite (``tests/e2e/stack.py``: API server, scheduler with the
LocalExecutor and ``parallelism`` 8, DAG processor, triggerer, SQLite) runs the DAGs of
``benchmarks/dags/bench_cancel_dags.py`` against the emulator in its own process: 100 ms of latency
on every answer, and 10 % of the cancels answered 429 with ``retry-after-ms`` of 20 to 50 ms (seeded).
Each DAG's run takes the IDs from its conf, cancels, and waits deferred until every batch is
``cancelled``, retrying a rate-limited cancel up to 5 times; the operators' defaults otherwise
(``poll_interval`` 1 s, ``max_concurrency`` 20).

* ``bulk 1000``: one ``StopBatchesOperator`` over 1,000 batches that settle 15 s after their cancel.
  Reported: how long after the last batch settled the task ended (target: within 10 s).
* ``bulk 100`` and ``mapped 100``: the same 100 batches (settling 2 s after their cancel, so that
  what is compared is what the two ways cost, not the API's settling) through the bulk operator and
  through ``StopBatchOperator.partial(...).expand(batch_id=...)``. Reported: the run's wall time and
  the CPU the run added to every process of Airflow (targets: the bulk run at least 20x faster, with
  at most 1/20 of the CPU), and where the run's time went: until its first cancel request, from the
  first to the last successful cancel, the batches' settling, and from the last batch settled to the
  cancel task's end (the trigger's event, the scheduler, a new task process) and to the run's end.
* ``bulk 300`` and ``mapped 300``: the same comparison at three times the size, to show how each way
  grows with N.

CPU is read from ``/proc`` for every Airflow process of the stack and its descendants (user + system,
and the reaped children's: a task process is counted when its supervisor waits for it), before and
after the run; the stack's idle rate, measured just before over ``IDLE_SEC``, is taken off for the same window.
Each case waits (up to a minute) for a load average below 1.5 first, and reports the load it found.
Every case checks, from the emulator's journal, that each batch got exactly one successful cancel.

Run alone: ``python -m benchmarks.bulk_cancel``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from benchmarks.common import create_batches, exit_on_signals, pyplot, wait_for_quiet_machine
from tests.e2e.stack import FINAL_RUN_STATES, AirflowStack, running, wait_until

if TYPE_CHECKING:
    from collections.abc import Sequence

BENCH_DAGS = Path(__file__).resolve().parent / "dags"
BULK_DAG, MAPPED_DAG = "bench_bulk_cancel", "bench_mapped_cancel"
LATENCY_SEC = 0.1
FAULT_RATE = 0.1
FAULT_SEED = 20_261_201
RETRY_AFTER_MS = (20, 30, 40, 50)
CANCEL_PATH = "/v1/batches/*/cancel"
BIG_N, BIG_SETTLE_SEC = 1000, 15.0
COMPARE_NS, COMPARE_SETTLE_SEC = (100, 300), 2.0  # the first is the target's N
IDLE_SEC = 15.0
RUN_TIMEOUT_SEC = 900.0
RUN_POLL_SEC = 2.0  # sparse, so that watching a run adds little to the API server's CPU
# Targets of the run-cleanup issue.
TARGET_AFTER_SETTLED_SEC = 10.0
TARGET_FACTOR = 20.0


class BenchStack(AirflowStack):
    """The end-to-end suite's Airflow with the benchmark's DAGs in its dags folder, and nothing else."""

    def dag_sources(self) -> list[Path]:
        """Return the benchmark's DAG files."""
        return sorted(BENCH_DAGS.glob("*.py"))


def _airflow_cpu_seconds(stack: AirflowStack) -> float:
    """Return the CPU seconds the stack's Airflow processes and their descendants have used, reaped ones included.

    Walked from the processes the stack started (not by its environment marker: a process that sets its
    title, as LocalExecutor workers and the triggerer do, no longer shows its environment); a task
    process counts in its supervisor's children times once it has been waited for.
    """
    total = 0.0
    for name, started in stack.processes.items():
        if name == "emulator" or not started.running():
            continue
        try:
            root = psutil.Process(started.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in tree:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system + times.children_user + times.children_system
    return total


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _settled_at(stack: AirflowStack, batch_ids: Sequence[str]) -> list[float]:
    """Return when each batch turned ``cancelled`` (the emulator's history); missing ones are left out."""
    return [at for batch_id in batch_ids for at, status in stack.batch(batch_id)["history"] if status == "cancelled"]


def _cancels(stack: AirflowStack, batch_ids: Sequence[str]) -> dict[str, Any]:
    entries = stack.journal(method="POST", path=CANCEL_PATH)
    statuses = Counter(entry["status"] for entry in entries)
    ok = Counter(entry["path"].split("/")[3] for entry in entries if entry["status"] == 200)
    return {
        "cancel_requests": len(entries),
        "rate_limited": statuses.get(429, 0),
        "exactly_one_ok_cancel": sum(1 for batch_id in batch_ids if ok.get(batch_id) == 1),
        "polls": len(stack.journal(method="GET", path="/v1/batches*")),
    }


def _timeline(
    stack: AirflowStack, run: dict[str, Any], batch_ids: Sequence[str], settled: Sequence[float], last_task_end: float
) -> dict[str, float] | None:
    """Return where a run's time went, in seconds: phases one after the other, from the emulator's journal
    and history and the run's dates (None when a batch never settled or got no successful cancel)."""
    ids = set(batch_ids)
    entries = [entry for entry in stack.journal(method="POST", path=CANCEL_PATH) if entry["path"].split("/")[3] in ids]
    sent = [entry["time"] for entry in entries]
    ok = [entry["time"] for entry in entries if entry["status"] == 200]
    if not sent or not ok or len(settled) != len(batch_ids):
        return None
    start, end = _seconds(run["start_date"]), _seconds(run["end_date"])
    return {
        "to_first_cancel": min(sent) - start,
        "cancels": max(ok) - min(sent),
        "settling": max(settled) - max(ok),
        "to_task_end": last_task_end - max(settled),
        "to_run_end": end - last_task_end,
    }


def _errors(stack: AirflowStack, dag_id: str, run_id: str, tis: dict[str, dict[str, Any]]) -> list[str]:
    """Return the error events in the logs of a run's task instances that did not succeed (a few)."""
    events: list[str] = []
    for key, ti in tis.items():
        if ti["state"] == "success":
            continue
        folder = f"map_index={ti['map_index']}" if ti["map_index"] >= 0 else ""
        for path in stack.task_log_files(dag_id, run_id, ti["task_id"]):
            for line in path.read_text(errors="replace").splitlines():
                if folder in str(path) and '"level":"error"' in line:
                    event = json.loads(line)
                    details = [f"{d.get('exc_type')}: {d.get('exc_value')}" for d in event.get("error_detail", [])]
                    events.append(f"{key} {path.name}: {event.get('event')} {'; '.join(details)}".strip())
    return events[:6]


def _case(stack: AirflowStack, dag_id: str, n: int, settle_sec: float) -> dict[str, Any]:
    stack.emulator.post("/_emulator/reset").raise_for_status()
    stack.emulator_settings(latency=0.0, cancel_delay=settle_sec)
    batch_ids = [batch_id for batch_id, _ in create_batches(f"{stack.emulator_base}/_emulator", n, "in_progress")]
    faults = {"kind": "rate_limit"}
    body = {
        "random": {
            "rate": FAULT_RATE,
            "seed": FAULT_SEED,
            "faults": [{**faults, "retry_after_ms": ms} for ms in RETRY_AFTER_MS],
            "method": "POST",
            "path": CANCEL_PATH,
        }
    }
    stack.emulator.post("/_emulator/faults", json=body).raise_for_status()
    stack.emulator_settings(latency=LATENCY_SEC)

    load = wait_for_quiet_machine()
    idle_start = _airflow_cpu_seconds(stack)
    time.sleep(IDLE_SEC)
    cpu_start, measured_from = _airflow_cpu_seconds(stack), time.monotonic()
    idle_rate = (cpu_start - idle_start) / IDLE_SEC

    run_id = stack.trigger(dag_id, conf={"batch_ids": batch_ids})

    def ended() -> dict[str, Any] | None:
        stack.assert_running()
        run = stack.dag_run(dag_id, run_id)
        return run if run["state"] in FINAL_RUN_STATES else None

    run = wait_until(ended, RUN_TIMEOUT_SEC, f"{dag_id} {run_id} to end", interval=RUN_POLL_SEC)
    cpu, measured_for = _airflow_cpu_seconds(stack) - cpu_start, time.monotonic() - measured_from
    wall = _seconds(run["end_date"]) - _seconds(run["start_date"])
    tis = stack.task_instances(dag_id, run_id)
    cancel_tis = [ti for key, ti in tis.items() if key.startswith(("stop_all", "stop_each"))]
    settled = _settled_at(stack, batch_ids)
    last_task_end = max(_seconds(ti["end_date"]) for ti in cancel_tis if ti["end_date"])
    stack.emulator.delete("/_emulator/faults").raise_for_status()
    result = {
        "dag_id": dag_id,
        "mode": "bulk" if dag_id == BULK_DAG else "mapped",
        "n": n,
        "settle_sec": settle_sec,
        "state": run["state"],
        "task_instances": len(cancel_tis),
        "task_states": dict(Counter(ti["state"] for ti in cancel_tis)),
        "task_retries": sum(ti["try_number"] - 1 for ti in cancel_tis),
        "wall_sec": wall,
        "cpu_sec": cpu,
        "idle_cpu_per_sec": idle_rate,
        "cpu_above_idle_sec": cpu - idle_rate * measured_for,
        "settled": len(settled),
        "ended_after_last_settled_sec": last_task_end - max(settled) if len(settled) == n else None,
        "timeline": _timeline(stack, run, batch_ids, settled, last_task_end),
        "load_before": load,
        "errors": _errors(stack, dag_id, run_id, tis),
        **_cancels(stack, batch_ids),
    }
    result["exactly_once"] = result["exactly_one_ok_cancel"] == n and result["state"] == "success"
    return result


def _summary(run: dict[str, Any]) -> str:
    after = run["ended_after_last_settled_sec"]
    return (
        f"bulk_cancel {run['mode']:>6} N={run['n']:<5} {run['state']}: {run['wall_sec']:.1f} s, "
        f"CPU {run['cpu_sec']:.1f} s ({run['cpu_above_idle_sec']:.1f} s above idle), "
        f"{run['task_instances']} task instance(s) {run['task_states']} ({run['task_retries']} retries), "
        f"{run['cancel_requests']} cancels ({run['rate_limited']} 429s), "
        f"exactly once: {run['exactly_once']}, ended "
        + ("-" if after is None else f"{after:.1f} s")
        + f" after the last batch settled, load {run['load_before']:.2f}"
        + "".join(f"\n  {error}" for error in run["errors"])
    )


def measure(big_n: int = BIG_N, compare_ns: Sequence[int] = COMPARE_NS) -> dict[str, Any]:
    """Start one Airflow, run the cases on it, stop it; return the figures and the settings."""
    runs: list[dict[str, Any]] = []
    cases = [(BULK_DAG, big_n, BIG_SETTLE_SEC)]
    cases += [(dag_id, n, COMPARE_SETTLE_SEC) for n in compare_ns for dag_id in (MAPPED_DAG, BULK_DAG)]
    with running(BenchStack(), BIG_SETTLE_SEC, {BULK_DAG, MAPPED_DAG}) as stack:
        try:
            for dag_id, n, settle_sec in cases:
                result = _case(stack, dag_id, n, settle_sec)
                runs.append(result)
                print(_summary(result), file=sys.stderr, flush=True)
        except Exception:
            print(stack.logs_report(stack.triggered), file=sys.stderr)
            raise
    return {
        "settings": {
            "latency_sec": LATENCY_SEC,
            "fault_rate": FAULT_RATE,
            "retry_after_ms": list(RETRY_AFTER_MS),
            "big_n": big_n,
            "big_settle_sec": BIG_SETTLE_SEC,
            "compare_n": compare_ns[0],
            "compare_ns": list(compare_ns),
            "compare_settle_sec": COMPARE_SETTLE_SEC,
            "idle_sec": IDLE_SEC,
        },
        "runs": runs,
    }


def _runs(results: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(run["mode"], run["n"]): run for run in results["runs"]}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the benchmark's targets with the measured figures and whether each is met."""
    settings, runs = results["settings"], _runs(results)
    verdicts: list[dict[str, Any]] = []
    big = runs.get(("bulk", settings["big_n"]))
    if big:
        after = big["ended_after_last_settled_sec"]
        verdicts.append(
            {
                "target": f"Bulk: one StopBatchesOperator over {big['n']} batches done within "
                f"{TARGET_AFTER_SETTLED_SEC:g} s after they settle, each cancelled exactly once",
                "measured": ("-" if after is None else f"{after:.1f} s after the last settled")
                + f"; {big['exactly_one_ok_cancel']} of {big['n']} with one 200 cancel, "
                f"{big['rate_limited']} 429s retried; run {big['state']}",
                "met": big["exactly_once"] and after is not None and after <= TARGET_AFTER_SETTLED_SEC,
            }
        )
    mapped, bulk = runs.get(("mapped", settings["compare_n"])), runs.get(("bulk", settings["compare_n"]))
    if mapped and bulk:
        speedup = mapped["wall_sec"] / bulk["wall_sec"]
        cpu_factor = mapped["cpu_above_idle_sec"] / max(bulk["cpu_above_idle_sec"], 1e-9)
        verdicts += [
            {
                "target": f"Bulk: at N = {bulk['n']}, at least {TARGET_FACTOR:g}x faster than mapped StopBatchOperator",
                "measured": f"{speedup:.1f}x ({bulk['wall_sec']:.1f} s vs {mapped['wall_sec']:.1f} s)",
                "met": bulk["exactly_once"] and mapped["exactly_once"] and speedup >= TARGET_FACTOR,
            },
            {
                "target": f"Bulk: at N = {bulk['n']}, at most 1/{TARGET_FACTOR:g} of the mapped run's CPU",
                "measured": f"1/{cpu_factor:.1f} ({bulk['cpu_above_idle_sec']:.1f} s vs "
                f"{mapped['cpu_above_idle_sec']:.1f} s above idle; "
                f"{bulk['cpu_sec']:.1f} s vs {mapped['cpu_sec']:.1f} s in all)",
                "met": bulk["exactly_once"] and mapped["exactly_once"] and cpu_factor >= TARGET_FACTOR,
            },
        ]
    return verdicts


def markdown(results: dict[str, Any]) -> list[str]:
    """Return the report's section on bulk cancels, as markdown lines."""
    settings = results["settings"]
    lines = [
        "### 5. Bulk cancel on a real Airflow (one StopBatchesOperator against a mapped StopBatchOperator)",
        "",
        "The end-to-end suite's Airflow (API server, scheduler with the LocalExecutor and `parallelism` 8, DAG "
        f"processor, triggerer, SQLite); emulator in its own process, {settings['latency_sec'] * 1000:.0f} ms "
        f"latency, {settings['fault_rate'] * 100:.0f} % of cancels answered 429 with `retry-after-ms` "
        f"{'/'.join(str(ms) for ms in settings['retry_after_ms'])} (seeded). Each run cancels the IDs of its conf "
        "and waits deferred until all are `cancelled` (`max_retry_count=5`, defaults otherwise). The "
        f"{settings['big_n']} batches settle {settings['big_settle_sec']:g} s after their cancel; the "
        f"{' and '.join(str(n) for n in _compared_ns(settings))} of the comparison "
        f"{settings['compare_settle_sec']:g} s after it. CPU: every "
        "Airflow process (task processes through their supervisors), emulator excluded; *above idle* takes off "
        f"the stack's idle rate (measured over {settings['idle_sec']:g} s before each run) for the same window.",
        "",
        "| N | how | task instances | run wall time s | CPU s above idle (in all) | cancel requests (429s) "
        "| batches with one 200 cancel | task ended after the last batch settled | load before |",
        "|---:|---|---:|---:|---|---|---|---|---:|",
    ]
    for run in results["runs"]:
        how = "one `StopBatchesOperator`" if run["mode"] == "bulk" else "mapped `StopBatchOperator`"
        after = run["ended_after_last_settled_sec"]
        lines.append(
            f"| {run['n']} | {how} | {run['task_instances']} | {run['wall_sec']:.1f} "
            f"| {run['cpu_above_idle_sec']:.1f} ({run['cpu_sec']:.1f}) | {run['cancel_requests']} "
            f"({run['rate_limited']}) | {run['exactly_one_ok_cancel']} of {run['n']} "
            f"| {'-' if after is None else f'{after:.1f} s'} | {run['load_before']:.2f} |"
        )
    lines += ["", *_timeline_table(results), "", *_ratios(results)]
    lines += [
        "",
        "![Cancel and wait for a set of batches on a real Airflow: mapped StopBatchOperator against one "
        "StopBatchesOperator, at each N](benchmarks/results/bulk_cancel.png)",
        "",
    ]
    return lines


def _compared_ns(settings: dict[str, Any]) -> list[int]:
    return list(settings.get("compare_ns") or [settings["compare_n"]])


def _timeline_table(results: dict[str, Any]) -> list[str]:
    """Where each run's time went: one phase after the other, from the emulator's journal and the run's dates."""
    lines = [
        "Where the time went (seconds; the phases follow one another and add up to the run's wall time):",
        "",
        "| N | how | run start to first cancel | first to last cancel | settling (API) "
        "| last settled to the cancel task's end | to the run's end |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in results["runs"]:
        phases = run.get("timeline")
        if not phases:
            continue
        how = "bulk" if run["mode"] == "bulk" else "mapped"
        lines.append(
            f"| {run['n']} | {how} | {phases['to_first_cancel']:.1f} | {phases['cancels']:.1f} "
            f"| {phases['settling']:.1f} | {phases['to_task_end']:.1f} | {phases['to_run_end']:.1f} |"
        )
    return lines


def _ratios(results: dict[str, Any]) -> list[str]:
    """One line per compared N: how much faster and lighter the bulk run was, and its floor at the first N."""
    settings, runs = results["settings"], _runs(results)
    lines: list[str] = []
    for n in _compared_ns(settings):
        mapped, bulk = runs.get(("mapped", n)), runs.get(("bulk", n))
        if not (mapped and bulk):
            continue
        cpu_factor = mapped["cpu_above_idle_sec"] / max(bulk["cpu_above_idle_sec"], 1e-9)
        lines.append(
            f"- N = {n}: the bulk run {mapped['wall_sec'] / bulk['wall_sec']:.1f}x faster "
            f"({bulk['wall_sec']:.1f} s vs {mapped['wall_sec']:.1f} s), 1/{cpu_factor:.0f} of the CPU."
        )
    n = settings["compare_n"]
    mapped, bulk = runs.get(("mapped", n)), runs.get(("bulk", n))
    if mapped and bulk and bulk.get("timeline"):
        phases = bulk["timeline"]
        floor = phases["settling"] + phases["to_task_end"]
        lines.append(
            f"- At N = {n}, the bulk run's settling and its end after the last batch settled (the trigger's "
            f"event, the scheduler, a new task process: Airflow's, not the operator's) alone took {floor:.1f} s; "
            f"1/{TARGET_FACTOR:g} of the mapped run is {mapped['wall_sec'] / TARGET_FACTOR:.1f} s."
        )
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    """Bar charts of the comparison at each N: run wall time and CPU above idle, mapped beside bulk."""
    plt = pyplot()
    runs = _runs(results)
    ns = [n for n in _compared_ns(results["settings"]) if ("mapped", n) in runs and ("bulk", n) in runs]
    figure, (wall, cpu) = plt.subplots(1, 2, figsize=(9, 4), dpi=120)
    width = 0.38
    for offset, (mode, label, color) in enumerate(
        (("mapped", "mapped StopBatchOperator", "tab:orange"), ("bulk", "one StopBatchesOperator", "tab:blue"))
    ):
        places = [index + (offset - 0.5) * width for index in range(len(ns))]
        wall.bar(places, [runs[mode, n]["wall_sec"] for n in ns], width, color=color, label=label)
        cpu.bar(places, [runs[mode, n]["cpu_above_idle_sec"] for n in ns], width, color=color, label=label)
    for axes in (wall, cpu):
        axes.set_xticks(range(len(ns)), [f"N = {n}" for n in ns])
    wall.set_ylabel("run wall time, s")
    cpu.set_ylabel("CPU s above idle, all Airflow processes")
    wall.legend(fontsize=8)
    for axes in (wall, cpu):
        for patch in axes.patches:
            axes.annotate(
                f"{patch.get_height():.1f}",
                (patch.get_x() + patch.get_width() / 2, patch.get_height()),
                ha="center",
                va="bottom",
                fontsize=9,
            )
        axes.grid(True, axis="y", alpha=0.3)
    figure.suptitle("Cancel and wait for a set of batches on a real Airflow (LocalExecutor)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--big-n", type=int, default=BIG_N)
    parser.add_argument("--compare-n", type=int, nargs="+", default=list(COMPARE_NS))
    args = parser.parse_args(argv)
    exit_on_signals()
    print(json.dumps(measure(args.big_n, args.compare_n), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
