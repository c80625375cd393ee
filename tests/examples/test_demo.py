"""``make demo`` (``python -m scripts.demo``): the account it prints, its exit status, and no process left behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.demo import EXPECTED_TASKS, RunRecord, TaskRow, find_problems

REPO = Path(__file__).resolve().parents[2]
DEMO_TIMEOUT_SEC = 150  # the demo must end within 2 minutes


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.demo", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SEC,
        check=False,
    )


def assert_nothing_left(output: str) -> None:
    """The emulator's process group is gone and the temporary Airflow home removed."""
    pid = int(re.search(r"emulator pid (\d+)", output).group(1))  # type: ignore[union-attr]
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert f"Emulator (pid {pid}) stopped." in output
    home = re.search(r"Airflow home: (\S+)", output).group(1)  # type: ignore[union-attr]
    assert not Path(home).exists()


def test_demo_tells_the_expected_story_and_exits_0() -> None:
    result = run_demo()
    output = result.stdout
    assert result.returncode == 0, output + result.stderr

    assert "the run ended failed" in output
    for task_id, (state, _) in EXPECTED_TASKS.items():
        assert re.search(rf"^  {task_id}\s+{state}\s", output, re.MULTILINE), task_id
    statuses = re.findall(r"^  \d\d:\d\d:\d\d\.\d{3}\s+[\d.]+ s  (\w+)$", output, re.MULTILINE)
    assert statuses == ["in_progress", "cancelling", "cancelled"]
    assert len(re.findall(r"POST /v1/batches/batch_\w+/cancel\s+200  cancel_batch: cancel", output)) == 1
    assert re.search(r"POST /v1/batches\s+200  submit_batch: create", output)
    assert re.search(r"request_counts  \d+ of 100 requests completed", output)
    assert "output_file_id  " in output
    assert "As expected:" in output
    assert "UNEXPECTED" not in output
    assert_nothing_left(output)


def test_demo_exits_1_when_the_batch_is_not_cancelled() -> None:
    """With processing that succeeds nothing is cancelled: the account says so and the exit status is 1."""
    result = run_demo("--conf", '{"fail_processing": false}')
    output = result.stdout
    assert result.returncode == 1, output + result.stderr
    assert "UNEXPECTED:" in output
    assert "task process_records ended success, expected failed" in output
    assert "the batch was not cancelled" in output
    assert "the batch got 0 cancel requests, expected exactly 1" in output
    assert "As expected" not in output
    assert_nothing_left(output)


def processes_with_home(home: str) -> list[int]:
    """Return the PIDs of live processes whose environment has AIRFLOW_HOME=home (the demo's Airflow)."""
    needle = f"AIRFLOW_HOME={home}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def test_demo_stopped_by_sigterm_leaves_nothing_behind(tmp_path: Path) -> None:
    output_path = tmp_path / "demo.out"
    with output_path.open("w") as output:
        demo = subprocess.Popen([sys.executable, "-m", "scripts.demo"], cwd=REPO, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 60
        while "running the DAG" not in output_path.read_text():
            assert demo.poll() is None and time.monotonic() < deadline, output_path.read_text()
            time.sleep(0.2)
        home = re.search(r"Airflow home: (\S+)", output_path.read_text()).group(1)  # type: ignore[union-attr]
        deadline = time.monotonic() + 30
        while not processes_with_home(home):  # airflow dags test has started
            assert time.monotonic() < deadline, output_path.read_text()
            time.sleep(0.2)
        time.sleep(2)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = output_path.read_text()
    assert_nothing_left(output)
    assert processes_with_home(home) == []


# -- the checks behind the exit status, on made-up accounts ---------------------------------------------


BATCH = "batch_1"
CREATE = {"method": "POST", "path": "/v1/batches", "status": 200, "time": 1.0}
CANCEL = {"method": "POST", "path": f"/v1/batches/{BATCH}/cancel", "status": 200, "time": 2.0}
POLL = {"method": "GET", "path": f"/v1/batches/{BATCH}", "status": 200, "time": 3.0}
HISTORY: list[list[Any]] = [[1.0, "in_progress"], [2.0, "cancelling"], [5.0, "cancelled"]]
REPORT = {"status": "cancelled", "request_counts": {"total": 100, "completed": 7, "failed": 0}}


def expected_run(**changes: Any) -> RunRecord:
    states = {task_id: state for task_id, (state, _) in EXPECTED_TASKS.items()}
    states.update(changes)
    tasks = [TaskRow(task_id, state, 0.1) for task_id, state in states.items()]
    return RunRecord("manual__1", "failed", tasks, {"report_partial_results": REPORT})


def test_expected_account_has_no_problem() -> None:
    assert find_problems(expected_run(), HISTORY, [CREATE, CANCEL, POLL], BATCH) == []


@pytest.mark.parametrize(
    ("run", "history", "journal", "problem"),
    [
        (expected_run(cancel_batch="failed"), HISTORY, [CREATE, CANCEL], "task cancel_batch ended failed"),
        (expected_run(), HISTORY[:2], [CREATE, CANCEL], "the batch was not cancelled"),
        (expected_run(), [[1.0, "in_progress"], [2.0, "completed"]], [CREATE, CANCEL], "not cancelled"),
        (expected_run(), [[1.0, "in_progress"], [2.0, "cancelled"]], [CREATE, CANCEL], "never went through"),
        (expected_run(), HISTORY, [CREATE, CANCEL, CANCEL], "2 cancel requests"),
        (expected_run(), HISTORY, [CREATE], "0 cancel requests"),
        (expected_run(), HISTORY, [CREATE, CANCEL, {**POLL, "status": 429}], "did not succeed"),
    ],
)
def test_unexpected_accounts_are_reported(
    run: RunRecord, history: list[list[Any]], journal: list[dict[str, Any]], problem: str
) -> None:
    problems = find_problems(run, history, journal, BATCH)
    assert len(problems) == 1, problems
    assert problem in problems[0]


def test_run_state_and_report_are_checked() -> None:
    run = expected_run()
    run.state = "success"
    run.xcoms = {}
    problems = find_problems(run, HISTORY, [CREATE, CANCEL], BATCH)
    assert any("the DAG run ended success" in p for p in problems)
    assert any("report_partial_results did not report" in p for p in problems)
    assert find_problems(expected_run(), [], [], None)[-1] == "no batch was submitted"


def test_the_account_names_a_list_page_as_one_and_the_port_option_reaches_the_emulator() -> None:
    from scripts.demo import describe_request, emulator_command, parse_args

    tasks = [TaskRow("submit_batch", "success", 0.1, started=0.0, ended=2.0)]
    page = {"method": "GET", "path": "/v1/batches", "query": {"limit": "100"}, "status": 200, "time": 1.0}
    assert describe_request(page, tasks, after_cancel=False) == (
        "submit_batch: list page of the account's batches (limit=100), for a batch an earlier try created"
    )
    assert emulator_command(3.0, parse_args(["--port", "8765"]).port)[-4:] == ["--port", "8765", "--cancel-delay", "3"]
    assert parse_args([]).port == 0
