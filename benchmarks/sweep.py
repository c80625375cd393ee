"""The sweep's cost: StopOrphanedBatchesOperator over 10,000 batches of 500 DAG runs against the emulator.

The emulator (in this process, over real HTTP on 127.0.0.1) holds ``N`` running batches of this
deployment, spread over ``RUNS`` DAG runs; Airflow's answer for each run's state comes from the task's
``get_dagrun_state`` (here a stand-in that counts its calls: every other run failed, the others
succeeded). The operator's own ``execute`` runs with the defaults (``run_states=("failed",)``,
``max_concurrency`` 20). Reported: list pages read (the bound: ⌈N/100⌉ + 1), state lookups (one per run),
cancels sent (one per batch of a failed run), wall time and this process's CPU (the emulator's
included). Each cancel is checked against the journal: no batch gets two.

Run alone: ``python -m benchmarks.sweep`` (writes ``benchmarks/results/sweep.json``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from benchmarks.common import RESULTS

N, RUNS = 10_000, 500
DAG_ID = "bench_sweep_pipeline"


def measure(n: int = N, runs: int = RUNS) -> dict[str, Any]:
    """Seed ``n`` batches of ``runs`` DAG runs, sweep them once, and return the figures."""
    from airflow_psopenai.operators import StopOrphanedBatchesOperator
    from airflow_psopenai.testing import OpenAIEmulator
    from airflow_psopenai.testing.dag_tests import connection_json

    with OpenAIEmulator() as emulator:
        os.environ["AIRFLOW_CONN_PSOPENAI_DEFAULT"] = connection_json(emulator)
        os.environ["AIRFLOW__PSOPENAI__DEPLOYMENT"] = "bench"
        for number in range(n):
            emulator.create_batch(
                metadata={
                    "airflow_deployment": "bench",
                    "airflow_dag_id": DAG_ID,
                    "airflow_run_id": f"run-{number % runs}",
                }
            )
        lookups: list[str] = []

        def get_dagrun_state(dag_id: str, run_id: str) -> str:
            lookups.append(run_id)
            return "failed" if int(run_id.split("-")[1]) % 2 == 0 else "success"

        context: Any = {"ti": SimpleNamespace(get_dagrun_state=get_dagrun_state)}
        before = len(emulator.journal)
        wall, cpu = time.perf_counter(), time.process_time()
        result = StopOrphanedBatchesOperator(task_id="sweep").execute(context)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        journal = emulator.journal[before:]
    pages = sum(1 for entry in journal if entry.method == "GET" and entry.path == "/v1/batches")
    cancels = Counter(entry.path.split("/")[3] for entry in journal if entry.method == "POST")
    failed_runs = sum(1 for run in range(runs) if run % 2 == 0)
    expected = sum(1 for number in range(n) if (number % runs) % 2 == 0)
    return {
        "n": n,
        "runs": runs,
        "pages": pages,
        "page_bound": math.ceil(n / 100) + 1,
        "state_lookups": len(lookups),
        "distinct_runs_looked_up": len(set(lookups)),
        "failed_runs": failed_runs,
        "cancels_sent": sum(cancels.values()),
        "batches_cancelled_twice": sum(1 for count in cancels.values() if count > 1),
        "expected_cancels": expected,
        "cancelled": len(result["cancelled"]),
        "kept": result["kept"],
        "wall_sec": wall,
        "cpu_sec": cpu,
    }


def markdown(figures: dict[str, Any]) -> list[str]:
    """Return the report's section for the sweep."""
    return [
        "## Sweep (`StopOrphanedBatchesOperator`)",
        "",
        "| batches | runs | list pages (bound) | state lookups | cancels (expected) | cancelled twice "
        "| wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|",
        f"| {figures['n']:,} | {figures['runs']} | {figures['pages']} ({figures['page_bound']}) "
        f"| {figures['state_lookups']} | {figures['cancels_sent']:,} ({figures['expected_cancels']:,}) "
        f"| {figures['batches_cancelled_twice']} | {figures['wall_sec']:.1f} | {figures['cpu_sec']:.1f} |",
        "",
    ]


def main() -> int:
    figures = measure()
    (RESULTS / "sweep.json").write_text(json.dumps(figures, indent=2) + "\n")
    print("\n".join(markdown(figures)))
    within = (
        figures["pages"] <= figures["page_bound"]
        and figures["state_lookups"] == figures["runs"]
        and figures["cancels_sent"] == figures["expected_cancels"]
        and figures["batches_cancelled_twice"] == 0
    )
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
