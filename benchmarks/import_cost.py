"""DAG-parse import cost: the milliseconds a DAG file pays to import each provider's tasks after ``airflow.sdk``.

Each sample is a fresh ``python -c`` process that imports ``airflow.sdk`` first (every DAG file does),
then times, with ``time.perf_counter()``, the import of

* ours: ``airflow_psopenai.operators`` then ``airflow_psopenai.sensors`` (reported separately and summed);
* the official: ``airflow.providers.openai.operators.openai`` (its batch operator's module).

The two kinds of process alternate, after one warm-up each (not counted) that fills the bytecode caches
(in the private Airflow home, whatever ``PYTHONDONTWRITEBYTECODE`` says);
the figure is the median over the samples, with the minimum and maximum beside it.

Run alone: ``python -m benchmarks.import_cost [--samples 15]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

from benchmarks.common import OFFICIAL, OURS, SIDES, BenchError, airflow_home, exit_on_signals, load_average, worker_env

DEFAULT_SAMPLES = 15
PROCESS_TIMEOUT_SEC = 120

_PRELUDE = """
import json, sys, time
t = time.perf_counter()
import airflow.sdk
sdk_ms = (time.perf_counter() - t) * 1000
before = set(sys.modules)
"""
_TIMED = {
    OURS: """
t = time.perf_counter()
import airflow_psopenai.operators
operators_ms = (time.perf_counter() - t) * 1000
t = time.perf_counter()
import airflow_psopenai.sensors
sensors_ms = (time.perf_counter() - t) * 1000
parts = {"operators_ms": operators_ms, "sensors_ms": sensors_ms}
""",
    OFFICIAL: """
t = time.perf_counter()
import airflow.providers.openai.operators.openai
parts = {"operators_ms": (time.perf_counter() - t) * 1000}
""",
}
_REPORT = """
print(json.dumps({"sdk_ms": sdk_ms, "modules": len(set(sys.modules) - before), **parts}))
"""


def _sample(side: str, env: dict[str, str]) -> dict[str, float]:
    script = _PRELUDE + _TIMED[side] + _REPORT
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_SEC,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"The {side} import sample failed:\n{done.stderr[-3000:]}")
    sample: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    sample["total_ms"] = sample["operators_ms"] + sample.get("sensors_ms", 0.0)
    return sample


def measure(samples: int = DEFAULT_SAMPLES) -> dict[str, Any]:
    """Return the median, minimum and maximum import times of each side over ``samples`` fresh processes."""
    raw: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    loads = []
    with airflow_home() as home:
        env = worker_env(home)
        # Every sample reads the bytecode the warm-up wrote, as a deployed Airflow reads what pip compiled at
        # install; with PYTHONDONTWRITEBYTECODE inherited, each sample compiled every module it imported.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
        for side in SIDES:
            _sample(side, env)  # warm-up: bytecode caches, page cache
        for _ in range(samples):
            loads.append(load_average()[0])
            for side in SIDES:
                raw[side].append(_sample(side, env))
    result: dict[str, Any] = {"samples": samples, "load_min": min(loads), "load_max": max(loads), "sides": {}}
    for side, runs in raw.items():
        summary: dict[str, Any] = {}
        for key in runs[0]:
            values = [run[key] for run in runs]
            summary[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        result["sides"][side] = summary
        total = summary["total_ms"]
        print(
            f"import_cost {side:>8}: median {total['median']:.1f} ms (min {total['min']:.1f}, max {total['max']:.1f}), "
            f"{summary['modules']['median']:.0f} new modules",
            file=sys.stderr,
            flush=True,
        )
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure and print the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    args = parser.parse_args(argv)
    exit_on_signals()
    print(json.dumps(measure(args.samples), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
