"""``make demo``: run the flagship example DAG offline against the bundled emulator, and tell what happened.

What it does, all in a temporary folder that is removed at the end (``--keep`` keeps it):

1. starts the OpenAI emulator as a subprocess (``python -m airflow_psopenai.testing --port 0``), in
   which a cancelled batch stays ``cancelling`` for ``--cancel-delay`` seconds;
2. creates a private Airflow home on SQLite (``airflow db migrate``), whose dags folder holds a copy
   of ``example_dags/example_psopenai_cancel_on_failure.py``, and points the connection
   ``psopenai_default`` at the emulator (``AIRFLOW_CONN_PSOPENAI_DEFAULT``);
3. runs the DAG once with ``airflow dags test`` (its full log goes to a file), which runs a deferred
   task's trigger in its own process: no triggerer is started;
4. prints an account: the tasks and how they ended (read through Airflow's models), the batch's status
   changes with their times and the requests the emulator received (from its admin endpoints), and
   where the partial results are (the XCom of ``report_partial_results``).

Exit status 0 when the account is the expected one: the processing task failed (on purpose), the
batch was cancelled exactly once, confirmed cancelled, and its partial results reported. Anything
else exits 1 with the reasons. No process is left behind: the emulator and Airflow run in their
own process groups, stopped in a ``finally``.

Settings inherited from the shell (``AIRFLOW_*``, ``OPENAI_*``) are ignored, so the demo never
touches a real Airflow installation or the real API.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "example_psopenai_cancel_on_failure"
DAG_FILE = REPO / "example_dags" / f"{DAG_ID}.py"
EMULATOR_KEY = "sk-emulator-key"  # the emulator's default key: accepted only by the emulator

# The flagship example's tasks in DAG order, with how each must end and what it stands for.
EXPECTED_TASKS: dict[str, tuple[str, str]] = {
    "submit_batch": ("success", "submitted the batch"),
    "process_records": ("failed", "failed on purpose (fail_processing=true)"),
    "cancel_batch": (
        "success",
        "sent the cancel, deferred; airflow dags test ran the wait in-process until the batch settled",
    ),
    "confirm_cancelled": ("success", "confirmed the batch is cancelled"),
    "report_partial_results": ("success", "logged request_counts and output_file_id"),
    "fail_run": ("failed", "failed the run on purpose, because a task failed"),
}
EXPECTED_RUN_STATE = "failed"

STARTUP_TIMEOUT_SEC = 30.0
MIGRATE_TIMEOUT_SEC = 120.0
DAG_TEST_TIMEOUT_SEC = 120.0


class DemoError(Exception):
    """A step of the demo could not run (not an unexpected account: that is reported, not raised)."""


# -- processes ----------------------------------------------------------------------------------------


def stop_group(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Stop a process started with ``start_new_session=True`` and everything in its group; reap it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Whatever is left in the group (the leader may be gone, children not), and the leader itself.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def emulator_command(cancel_delay: float, port: int) -> list[str]:
    """Return the command that serves the emulator on ``port`` (0: a free one)."""
    return [
        sys.executable,
        "-m",
        "airflow_psopenai.testing",
        "--port",
        str(port),
        "--cancel-delay",
        f"{cancel_delay:g}",
    ]


class Emulator:
    """The emulator in a subprocess of its own process group; reads its API base from the first stdout line."""

    def __init__(self, cancel_delay: float, log_path: Path, port: int = 0) -> None:
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            emulator_command(cancel_delay, port),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        try:
            self.api_base = self._first_line()
        except BaseException:
            self.stop()
            raise
        self.base_url = self.api_base.removesuffix("/v1")

    def _first_line(self) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT_SEC)
        if not lines or not lines[0].startswith("http"):
            raise DemoError(f"The emulator did not print its API base within {STARTUP_TIMEOUT_SEC:g} s.")
        return lines[0].strip()

    def admin(self, path: str) -> Any:
        """Return the JSON answer of ``GET /_emulator/<path>``."""
        with urllib.request.urlopen(f"{self.base_url}/_emulator/{path}", timeout=10) as response:
            return json.load(response)

    def stop(self) -> None:
        """Stop the emulator and reap it."""
        stop_group(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


def run_logged(command: list[str], env: dict[str, str], log: IO[str], timeout: float) -> int:
    """Run ``command`` in its own process group, output to ``log``; kill the group on timeout or error."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DemoError(f"`{' '.join(command[-3:])}` did not end within {timeout:g} s.") from None
    finally:
        stop_group(process, grace=0)


# -- Airflow ------------------------------------------------------------------------------------------


def airflow_command() -> list[str]:
    """Return how to call this environment's Airflow CLI."""
    script = Path(sys.executable).with_name("airflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "airflow"]


def airflow_env(home: Path, api_base: str) -> dict[str, str]:
    """Return an environment for a private Airflow home that talks to the emulator, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "OPENAI_"))}
    connection = {"conn_type": "psopenai", "host": api_base, "password": EMULATOR_KEY}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW_CONN_PSOPENAI_DEFAULT": json.dumps(connection),
        }
    )
    return env


@dataclass
class TaskRow:
    """One task instance of the run."""

    task_id: str
    state: str | None
    seconds: float | None
    started: float | None = None
    ended: float | None = None


@dataclass
class RunRecord:
    """What Airflow's database says about the run."""

    run_id: str
    state: str
    tasks: list[TaskRow]
    xcoms: dict[str, Any] = field(default_factory=dict)


# Run in the demo's Airflow environment: the run, its task instances and XComs through Airflow's models
# (as the tests read them), never through Airflow's tables, which change between releases.
READ_RUN = """
import json, sys
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

(run,) = DagRun.find(dag_id=sys.argv[1])
tasks = [
    [ti.task_id, ti.state and str(ti.state), ti.duration,
     ti.start_date and ti.start_date.timestamp(), ti.end_date and ti.end_date.timestamp()]
    for ti in run.get_task_instances() if ti.map_index < 0
]
with create_session() as session:
    rows = session.scalars(XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=run.dag_id))
    xcoms = {row.task_id: XComModel.deserialize_value(row) for row in rows}
print(json.dumps({"run_id": run.run_id, "state": str(run.state), "tasks": tasks, "xcoms": xcoms}))
"""


def read_run(env: dict[str, str], log: IO[str]) -> RunRecord:
    """Read the (only) run of the DAG, its task instances and their return values."""
    result = subprocess.run(
        [sys.executable, "-c", READ_RUN, DAG_ID],
        env=env,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT_SEC,
        check=False,
    )
    log.write(result.stderr)
    if result.returncode != 0:
        raise DemoError(f"Could not read the run of {DAG_ID} from Airflow: {result.stderr.strip()[-500:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    tasks = [TaskRow(*row) for row in found["tasks"]]
    order = list(EXPECTED_TASKS)
    tasks.sort(key=lambda t: order.index(t.task_id) if t.task_id in order else len(order))
    return RunRecord(found["run_id"], found["state"], tasks, found["xcoms"])


# -- the account --------------------------------------------------------------------------------------


def clock(epoch: float) -> str:
    """Return local wall-clock time with milliseconds."""
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S.%f")[:-3]


def describe_request(entry: dict[str, Any], tasks: list[TaskRow], after_cancel: bool) -> str:
    """Return what a request to the batch API was, and which task sent it (the one running at the time)."""
    senders = [
        t.task_id
        for t in tasks
        if t.started is not None and t.ended is not None and t.started <= entry["time"] <= t.ended
    ]
    sender = ", ".join(senders) or "unknown task"
    if entry["path"].endswith("/cancel"):
        return f"{sender}: cancel"
    if entry["method"] == "POST":
        return f"{sender}: create"
    if entry["path"].endswith("/batches"):
        query = ", ".join(f"{name}={value}" for name, value in (entry.get("query") or {}).items())
        return f"{sender}: list page of the account's batches ({query}), for a batch an earlier try created"
    if sender == "cancel_batch":
        return f"{sender}: {'poll of the deferred wait' if after_cancel else 'status check before the cancel'}"
    return f"{sender}: {'poke' if sender == 'confirm_cancelled' else 'retrieve'}"


def find_problems(
    run: RunRecord, history: list[list[Any]], journal: list[dict[str, Any]], batch_id: str | None
) -> list[str]:
    """Return what differs from the expected account (an empty list when all is as expected)."""
    problems: list[str] = []
    states = {task.task_id: task.state for task in run.tasks}
    for task_id, (expected, _) in EXPECTED_TASKS.items():
        if states.get(task_id) != expected:
            problems.append(f"task {task_id} ended {states.get(task_id)}, expected {expected}")
    if run.state != EXPECTED_RUN_STATE:
        problems.append(f"the DAG run ended {run.state}, expected {EXPECTED_RUN_STATE}")
    if batch_id is None:
        problems.append("no batch was submitted")
        return problems
    statuses = [status for _, status in history]
    if not statuses or statuses[-1] != "cancelled":
        problems.append(f"the batch was not cancelled (status changes: {statuses})")
    elif "cancelling" not in statuses:
        problems.append(f"the batch never went through cancelling (status changes: {statuses})")
    cancels = [e for e in journal if e["method"] == "POST" and e["path"] == f"/v1/batches/{batch_id}/cancel"]
    if len(cancels) != 1:
        problems.append(f"the batch got {len(cancels)} cancel requests, expected exactly 1")
    failed = [e for e in journal if not (e["status"] and 200 <= e["status"] < 300)]
    if failed:
        problems.append(f"{len(failed)} request(s) did not succeed: {[(e['path'], e['status']) for e in failed]}")
    report = run.xcoms.get("report_partial_results")
    if not isinstance(report, dict) or report.get("status") != "cancelled" or not report.get("request_counts"):
        problems.append(f"report_partial_results did not report a cancelled batch with request_counts: {report}")
    return problems


def print_account(run: RunRecord, history: list[list[Any]], journal: list[dict[str, Any]], batch_id: str) -> None:
    """Print what happened, for a person."""
    print(f"\nTasks of run {run.run_id} (the run ended {run.state}):")
    for task in run.tasks:
        note = EXPECTED_TASKS.get(task.task_id, ("", ""))[1]
        took = f"{task.seconds:5.1f} s" if task.seconds is not None else "      "
        print(f"  {task.task_id:<24} {task.state or 'none':<8} {took}  {note}")

    start = min([at for at, _ in history] + [entry["time"] for entry in journal], default=0.0)
    print(f"\nStatus changes of batch {batch_id} (emulator's history):")
    for at, status in history:
        print(f"  {clock(at)}  {at - start:5.1f} s  {status}")

    print("\nRequests the emulator received (journal):")
    after_cancel = False
    for entry in journal:
        after_cancel = after_cancel or entry["path"].endswith("/cancel")
        print(
            f"  {clock(entry['time'])}  {entry['time'] - start:5.1f} s  {entry['method']:<4} "
            f"{entry['path']:<58} {entry['status']}  {describe_request(entry, run.tasks, after_cancel)}"
        )

    report = run.xcoms.get("report_partial_results") or {}
    counts = report.get("request_counts") or {}
    output_file_id = report.get("output_file_id")
    print("\nPartial results (XCom of report_partial_results):")
    print(f"  status          {report.get('status')}")
    print(
        f"  request_counts  {counts.get('completed')} of {counts.get('total')} requests completed, "
        f"{counts.get('failed')} failed, before the cancel"
    )
    if output_file_id:
        print(f"  output_file_id  {output_file_id}  (download: GET /v1/files/{output_file_id}/content)")
    else:
        print("  output_file_id  none: no request completed before the cancel")


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Return the command line options."""
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cancel-delay", type=float, default=3.0, help="seconds a cancelled batch stays cancelling (default: 3)"
    )
    parser.add_argument("--port", type=int, default=0, help="port of the emulator on 127.0.0.1 (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary Airflow home and the logs")
    parser.add_argument("--conf", default=None, help="JSON conf for the run, e.g. '{\"fail_processing\": false}'")
    return parser.parse_args(argv)


def step(label: str) -> float:
    """Print the start of a step and return its start time."""
    print(f"  {label} ...", end="", flush=True)
    return time.monotonic()


def done(started: float, note: str = "done") -> None:
    """Print the end of a step."""
    print(f" {note} ({time.monotonic() - started:.1f} s)", flush=True)


def run_demo(home: Path, args: argparse.Namespace) -> int:
    """Run every step in ``home``; return the exit status."""
    (home / "dags").mkdir()
    shutil.copy(DAG_FILE, home / "dags" / DAG_FILE.name)
    log_path = home / "airflow.log"
    emulator: Emulator | None = None
    try:
        started = step(f"starting the OpenAI emulator (cancel delay {args.cancel_delay:g} s)")
        emulator = Emulator(args.cancel_delay, home / "emulator.log", args.port)
        done(started, f"{emulator.api_base}, emulator pid {emulator.process.pid}")

        env = airflow_env(home, emulator.api_base)
        airflow = airflow_command()
        with log_path.open("w") as log:
            started = step("creating the Airflow database (airflow db migrate)")
            if run_logged([*airflow, "db", "migrate"], env, log, MIGRATE_TIMEOUT_SEC) != 0:
                raise DemoError("airflow db migrate failed")
            done(started)
            started = step(f"running the DAG (airflow dags test {DAG_ID})")
            conf = ["--conf", args.conf] if args.conf else []
            code = run_logged([*airflow, "dags", "test", DAG_ID, *conf], env, log, DAG_TEST_TIMEOUT_SEC)
            done(started, f"done, exit status {code}" + (" (it exits 1 when the run fails)" if code == 1 else ""))
            run = read_run(env, log)
        submitted = run.xcoms.get("submit_batch")
        batch_id = submitted.get("id") if isinstance(submitted, dict) else None
        history = emulator.admin(f"history/{batch_id}") if batch_id else []
        journal = emulator.admin("journal")
        if batch_id:
            print_account(run, history, journal, batch_id)
        problems = find_problems(run, history, journal, batch_id)
    except DemoError as error:
        print(f"\nThe demo could not run: {error}")
        if log_path.exists():
            print(f"Last lines of the Airflow log ({log_path}):")
            print("".join(log_path.read_text().splitlines(keepends=True)[-40:]))
        return 1
    finally:
        if emulator is not None:
            emulator.stop()
            print(f"\nEmulator (pid {emulator.process.pid}) stopped.")

    if problems:
        print("\nUNEXPECTED:")
        for problem in problems:
            print(f"  - {problem}")
        print(f"The full Airflow log is in {log_path}" + ("" if args.keep else " (run with --keep to keep it)."))
        return 1
    print(
        "\nAs expected: the processing task failed, so the batch was cancelled (one cancel request), "
        "confirmed cancelled, and its partial results were reported. The DAG run is marked failed "
        "because process_records failed."
    )
    return 0


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    args = parse_args(argv)
    # SIGTERM or SIGHUP end the demo like Ctrl-C does: through the finally blocks that stop the processes.
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _exit_on_signal)
    began = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="psopenai-demo-"))
    print(f"airflow-psopenai demo: {DAG_ID}, offline against the bundled emulator")
    print(f"  Airflow home: {home}")
    try:
        code = run_demo(home, args)
    finally:
        if args.keep:
            print(f"Kept {home} (airflow.db, airflow.log, emulator.log).")
        else:
            shutil.rmtree(home, ignore_errors=True)
            print(f"Removed {home}.")
    print(f"Demo finished in {time.monotonic() - began:.1f} s, exit status {code}.")
    return code


if __name__ == "__main__":
    sys.exit(main())
