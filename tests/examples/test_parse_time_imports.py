"""What a DAG file imports at parse time: the operators' and sensors' modules, none of the execute-time code.

The hooks, the HTTP client (httpx), the retries (tenacity), the cancel path, the waits and the
triggers load when a task runs. The lists below are exact, so that a module joining the DAG
processor's imports is a change seen in review, not a slow drift.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

# Everything of ours that importing the example DAG files and building their tasks loads.
PARSE_TIME_MODULES = {
    "airflow_psopenai.callbacks",
    "airflow_psopenai.cancelling",
    "airflow_psopenai.cancelling.cancel",  # check_cancel_options: the operators check their options when built
    "airflow_psopenai.cancelling.concurrency",  # StopBatchesOperator's max_concurrency default and check
    "airflow_psopenai.cancelling.object_ids",
    "airflow_psopenai.cancelling.sweep",  # StopOrphanedBatchesOperator checks its run_states when built
    "airflow_psopenai.client",
    "airflow_psopenai.client.deadline",
    "airflow_psopenai.client.rendered",  # what a template rendered to, for the IDs' checks
    "airflow_psopenai.client.validation",
    "airflow_psopenai.compat",  # example_psopenai_deadline.py reads DEADLINE_ALERTS
    "airflow_psopenai.exceptions",
    "airflow_psopenai.operators",
    "airflow_psopenai.operators.options",  # the options every cancelling operator declares
    "airflow_psopenai.operators.stop",
    "airflow_psopenai.operators.stop_batches",
    "airflow_psopenai.operators.sweep",  # example_psopenai_sweep.py
    "airflow_psopenai.resource_task",
    "airflow_psopenai.resources",
    "airflow_psopenai.run_tags",  # the run tag keys the sweep's decisions read
    "airflow_psopenai.sensors",
    "airflow_psopenai.sensors.cancelled",
}
# Third-party packages the example DAGs may load besides Airflow: Airflow's own, for their schedules and Params.
OTHER_PACKAGES_ALLOWED = {"croniter", "packaging"}
EXECUTE_TIME_PACKAGES = {"httpx", "httpcore", "h11", "anyio", "tenacity", "asgiref"}

SCRIPT = """
import json, runpy, sys
import airflow.sdk
before = set(sys.modules)
for path in sys.argv[1:]:
    runpy.run_path(path, run_name="dag_file")
print("MODULES:" + json.dumps(sorted(set(sys.modules) - before)))
"""


def modules_a_dag_file_imports() -> set[str]:
    """Return the modules the example DAG files load after ``import airflow.sdk``, in a fresh interpreter."""
    dag_files = sorted(str(path) for path in (REPO / "example_dags").glob("*.py"))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *dag_files], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = (line for line in done.stdout.splitlines() if line.startswith("MODULES:"))
    return set(json.loads(line.removeprefix("MODULES:")))


def test_a_dag_file_imports_only_what_parsing_needs() -> None:
    new = modules_a_dag_file_imports()
    assert {name for name in new if name.split(".")[0] == "airflow_psopenai"} == PARSE_TIME_MODULES
    packages = {name.split(".")[0] for name in new} - {"airflow", "airflow_psopenai"} - sys.stdlib_module_names
    assert not packages & EXECUTE_TIME_PACKAGES
    assert packages <= OTHER_PACKAGES_ALLOWED, sorted(packages - OTHER_PACKAGES_ALLOWED)
