"""A real Airflow (API server, scheduler, DAG processor, triggerer) and the OpenAI emulator, as subprocesses.

Everything runs from a private temporary AIRFLOW_HOME: SQLite metadata database, LocalExecutor
(Airflow 3.3 accepts it on SQLite: the default executor, as ``airflow standalone`` runs it), a dags
folder holding copies of the DAGs under test, logs. Every listening port is a free one. Each process
runs in its own session (process group) with stdout and stderr in a log file, and carries an
environment marker, so that the teardown finds and stops everything the suite started, also the
task processes Airflow moves to process groups of their own.

Nothing here imports Airflow: the pytest process has its own Airflow configuration (tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import psutil

from tests.ports import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO = Path(__file__).resolve().parents[2]
E2E_DAGS = Path(__file__).resolve().parent / "dags"
EXAMPLE_DAGS = REPO / "example_dags"
VENV_BIN = Path(sys.executable).parent
AIRFLOW = str(VENV_BIN / "airflow")

MARKER_ENV = "PSOPENAI_E2E_SESSION"
EMULATOR_KEY = "sk-e2e-emulator-key-0123456789"
FINAL_RUN_STATES = frozenset({"success", "failed"})
SQLITE_LOCKED_RETRIES = 3  # tries of a REST write that met SQLite's lock (see AirflowStack.patch)
URL_LINE_RE = re.compile(r"^http://\S+/v1$")

T = TypeVar("T")
S = TypeVar("S", bound="AirflowStack")
# The stacks up now, for the logs a failed test reports (tests/e2e/conftest.py).
RUNNING_STACKS: list[AirflowStack] = []


def wait_until(check: Callable[[], T], timeout: float, what: str | Callable[[], str], interval: float = 0.5) -> T:
    """Call ``check`` until it returns something truthy and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"Timed out after {timeout:g} s waiting for {detail}")
        time.sleep(interval)


def _alive(proc: psutil.Process) -> bool:
    """Return whether a process still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tail(path: Path, lines: int = 150) -> str:
    """Return the last lines of a text file (empty when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Process:
    """One long-running subprocess in its own session, output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path, user: str | None = None
    ) -> None:
        """Prepare; nothing runs before :meth:`start`; ``user`` names the account it runs as (else ours)."""
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.user = user
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        """Start the process (appending to its log file)."""
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                user=self.user,
            )
        return self

    @property
    def pid(self) -> int:
        """Return the process id (also its process group id)."""
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def running(self) -> bool:
        """Return whether the main process still runs."""
        return self.popen is not None and self.popen.poll() is None

    def group_members(self) -> list[psutil.Process]:
        """Return the live processes of this process's group (the main one and its children)."""
        members = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == self.pid and proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return members

    def terminate_main(self, timeout: float) -> int:
        """Send SIGTERM to the main process only, as a service manager stopping it would; return its exit code."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.popen is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            end = time.monotonic() + wait
            while time.monotonic() < end and (self.running() or self.group_members()):
                time.sleep(0.2)
            if not self.running() and not self.group_members():
                break
        if self.running():
            self.popen.wait(5)

    def signal_all(self, sig: signal.Signals) -> list[psutil.Process]:
        """Send ``sig`` to the process, its group and every descendant at once; return them.

        Descendants are found first: Airflow moves task processes to process groups of their own.
        """
        assert self.popen is not None
        targets = [*self.group_members(), *psutil.Process(self.pid).children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)
        for target in targets:
            with contextlib.suppress(psutil.Error):
                target.send_signal(sig)
        return targets

    def kill(self, timeout: float = 30) -> float:
        """SIGKILL the process and everything it started, as a machine dying would; return when."""
        assert self.popen is not None
        victims = self.signal_all(signal.SIGKILL)
        killed = time.time()
        self.popen.wait(timeout)

        def alive() -> list[psutil.Process]:
            return [victim for victim in victims if _alive(victim)]

        wait_until(lambda: not alive(), timeout, lambda: f"{self.name}'s processes to die: {alive()}")
        return killed

    def log_tail(self, lines: int = 150) -> str:
        """Return the end of the process's output."""
        return tail(self.log_path, lines)


@dataclass
class RunResult:
    """A finished DAG run: its state, each task's final state, and every state seen while polling."""

    dag_id: str
    run_id: str
    state: str
    run: dict[str, Any]
    task_instances: dict[str, dict[str, Any]]
    # task key -> [(epoch seconds, state), ...] in polling order
    samples: dict[str, list[tuple[float, str | None]]] = field(default_factory=dict)

    @property
    def states(self) -> dict[str, str | None]:
        """Return each task's final state (mapped tasks as ``task_id[i]``)."""
        return {key: ti["state"] for key, ti in self.task_instances.items()}

    def seen(self, key: str) -> set[str | None]:
        """Return every state a task was seen in."""
        return {state for _, state in self.samples.get(key, [])}

    def deferred_windows(self, key: str) -> list[tuple[float, float]]:
        """Return the time spans between two consecutive polls that both saw the task ``deferred``."""
        samples = self.samples.get(key, [])
        return [
            (before[0], after[0])
            for before, after in itertools.pairwise(samples)
            if before[1] == after[1] == "deferred"
        ]


def ti_key(ti: dict[str, Any]) -> str:
    """Return ``task_id``, or ``task_id[map_index]`` for a mapped task instance."""
    return ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"


TRIGGERS_SCRIPT = """
import json
from sqlalchemy import select
from airflow.models.trigger import Trigger
from airflow.utils.session import create_session

with create_session() as session:
    rows = [
        {
            "id": t.id,
            "classpath": t.classpath,
            "triggerer_id": t.triggerer_id,
            "encrypted_kwargs": t.encrypted_kwargs,
            "kwargs": t.kwargs,
        }
        for t in session.scalars(select(Trigger))
    ]
print("TRIGGERS_JSON:" + json.dumps(rows, default=repr))
"""


class AirflowStack:
    """The emulator and Airflow's four services, with the REST calls the tests need."""

    # The names of the triggerer processes, and what each is started with besides ``airflow triggerer``.
    TRIGGERERS: tuple[str, ...] = ("triggerer",)
    TRIGGERER_ARGS: tuple[str, ...] = ()

    def __init__(self) -> None:
        """Prepare a private AIRFLOW_HOME; nothing runs before :meth:`start`."""
        self.session_id = uuid.uuid4().hex
        self.root = Path(tempfile.mkdtemp(prefix="psopenai-e2e-"))
        self.home = self.root / "airflow"
        self.dags = self.home / "dags"
        self.logs = self.home / "logs"
        self.process_logs = self.root / "process-logs"
        for folder in (self.dags, self.logs, self.process_logs):
            folder.mkdir(parents=True)
        self.processes: dict[str, Process] = {}
        self.retired: list[Process] = []
        self.triggered: list[tuple[str, str]] = []
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.emulator_base = ""
        self.emulator_api_base = ""
        self.env: dict[str, str] = {}
        self._api: httpx.Client | None = None
        self._emulator: httpx.Client | None = None
        # Counted by tests/e2e/conftest.py; running() keeps the logs of a stack with failed tests.
        self.failed_tests = 0

    # -- life cycle ---------------------------------------------------------------------------------------

    def dag_sources(self) -> list[Path]:
        """Return the DAG files under test: the e2e DAGs and the example DAGs."""
        return [*sorted(E2E_DAGS.glob("*.py")), *sorted(EXAMPLE_DAGS.glob("example_psopenai_*.py"))]

    @property
    def dag_files(self) -> list[str]:
        """Return the names of the DAG files in the dags folder."""
        return [source.name for source in self.dag_sources()]

    def copy_dags(self) -> None:
        """Copy the DAG files under test into the dags folder."""
        for source in self.dag_sources():
            shutil.copy(source, self.dags / source.name)

    def base_env(self) -> dict[str, str]:
        """Return the pytest process's environment without any Airflow or OpenAI setting."""
        return {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("AIRFLOW", "_AIRFLOW", "OPENAI_", "PYTEST_"))
        }

    def build_env(self) -> dict[str, str]:
        """Return the environment of every Airflow process."""
        from cryptography.fernet import Fernet

        connection = {"conn_type": "psopenai", "host": self.emulator_api_base, "password": EMULATOR_KEY}
        env = self.base_env()
        env.update(
            {
                MARKER_ENV: self.session_id,
                "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "PYTHONUNBUFFERED": "1",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "socket.gethostname",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
                "AIRFLOW__API_AUTH__JWT_SECRET": base64.b64encode(secrets.token_bytes(32)).decode(),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "300",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW_CONN_PSOPENAI_DEFAULT": json.dumps(connection),
                # For the waits whose tests count each batch's own polls: no list pages in their place.
                "AIRFLOW_CONN_PSOPENAI_PER_BATCH": json.dumps({**connection, "extra": {"coalesce_polling": False}}),
                # The provider's listener: the batches of a run marked failed by hand are cancelled too.
                "AIRFLOW__PSOPENAI__CANCEL_BATCHES_OF_FAILED_RUNS": "True",
            }
        )
        return env

    def process(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, user: str | None = None
    ) -> Process:
        """Start a long-running process and register it (``name-N.log`` for the N-th of one name)."""
        log_path = self.process_logs / f"{name}.log"
        if name in self.processes:
            self.retired.append(self.processes[name])
            log_path = self.process_logs / f"{name}-{len(self.retired) + 1}.log"
        proc = Process(name, argv, env or self.env, log_path, self.home, user).start()
        self.processes[name] = proc
        return proc

    def start(self, emulator_cancel_delay: float) -> None:
        """Start the emulator and Airflow, and wait until every service is healthy."""
        self.copy_dags()
        self.start_emulator(emulator_cancel_delay)
        self.env = self.build_env()
        self.migrate()
        self.start_services()
        wait_until(self._healthy, 300, lambda: f"a healthy Airflow: {self._health_text()}\n{self.logs_report()}")
        self._api = httpx.Client(base_url=self.api_url, timeout=30)
        self._api.headers["Authorization"] = f"Bearer {self.access_token()}"

    def start_emulator(self, emulator_cancel_delay: float) -> None:
        """Start the OpenAI emulator on a free port and learn its URL."""
        emulator_env = {**self.base_env(), MARKER_ENV: self.session_id, "PYTHONUNBUFFERED": "1"}
        emulator = self.process(
            "emulator",
            [
                sys.executable,
                "-m",
                "airflow_psopenai.testing",
                "--port",
                "0",
                "--api-key",
                EMULATOR_KEY,
                "--cancel-delay",
                str(emulator_cancel_delay),
            ],
            env=emulator_env,
        )
        self.emulator_api_base = wait_until(
            self._emulator_url, 60, lambda: f"the emulator's URL\n{emulator.log_tail()}"
        )
        self.emulator_base = self.emulator_api_base.removesuffix("/v1")
        self._emulator = httpx.Client(base_url=self.emulator_base, timeout=30)

    def migrate(self) -> None:
        """Create the metadata database (``airflow db migrate``)."""
        migrate_log = self.process_logs / "db-migrate.log"
        with migrate_log.open("wb") as log:
            completed = subprocess.run(
                [AIRFLOW, "db", "migrate"],
                env=self.env,
                cwd=self.home,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=300,
                check=False,
            )
        assert completed.returncode == 0, f"airflow db migrate failed:\n{tail(migrate_log)}"

    def start_services(self) -> None:
        """Start Airflow's long-running services."""
        self.process("api-server", [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)])
        self.process("scheduler", [AIRFLOW, "scheduler"])
        self.process("dag-processor", [AIRFLOW, "dag-processor"])
        for name in self.TRIGGERERS:
            self.start_triggerer(name)

    def access_token(self) -> str:
        """Return a REST API token (the simple auth manager makes everyone an admin here)."""
        token = httpx.get(f"{self.api_url}/auth/token", timeout=30)
        assert token.status_code in (200, 201), token.text
        return str(token.json()["access_token"])

    def _emulator_url(self) -> str | None:
        emulator = self.processes["emulator"]
        assert emulator.running(), f"the emulator exited:\n{emulator.log_tail()}"
        for line in emulator.log_tail(20).splitlines():
            if URL_LINE_RE.match(line.strip()):
                return line.strip()
        return None

    def assert_running(self) -> None:
        """Fail with the logs when a process died."""
        dead = [proc.name for proc in self.processes.values() if not proc.running()]
        assert not dead, f"process(es) {dead} exited\n{self.logs_report()}"

    def _health(self) -> dict[str, Any]:
        try:
            response = httpx.get(f"{self.api_url}/api/v2/monitor/health", timeout=10)
        except httpx.HTTPError:
            return {}
        return response.json() if response.status_code == 200 else {}

    def _health_text(self) -> str:
        return json.dumps(self._health())

    def _healthy(self) -> bool:
        self.assert_running()
        health = self._health()
        services = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return bool(health) and all((health.get(name) or {}).get("status") == "healthy" for name in services)

    def wait_for_dags(
        self,
        dag_ids: set[str],
        files: set[str],
        timeout: float = 240,
        *,
        keep_paused: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, dict[str, Any]]:
        """Wait until the DAG processor has parsed ``dag_ids`` with no import error in ``files``; unpause them
        but ``keep_paused``."""

        def parsed() -> dict[str, dict[str, Any]] | None:
            self.assert_running()
            errors = [
                error
                for error in self.get("/api/v2/importErrors", limit=1000)["import_errors"]
                if Path(error["filename"]).name in files
            ]
            assert not errors, f"DAG import errors: {json.dumps(errors, indent=2)}"
            dags = {dag["dag_id"]: dag for dag in self.get("/api/v2/dags", limit=1000)["dags"]}
            return dags if dag_ids <= set(dags) else None

        dags = wait_until(parsed, timeout, lambda: f"DAGs {sorted(dag_ids)} to be parsed\n{self.logs_report()}")
        for dag_id in dag_ids - keep_paused:
            self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
        return dags

    def stop(self) -> list[str]:
        """Stop every process of the suite; return descriptions of any that would not stop."""
        for client in (self._api, self._emulator):
            if client is not None:
                client.close()
        # The last started first: the services before what they use (the emulator, a database).
        for proc in reversed([*self.retired, *self.processes.values()]):
            proc.stop()
        for proc in self.marked_processes():
            try:
                proc.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(self.marked_processes(), timeout=10)
        leftovers = []
        for proc in self.marked_processes():
            try:
                leftovers.append(f"{proc.pid} {' '.join(proc.cmdline())}")
            except psutil.Error:
                continue
        return leftovers

    def marked_processes(self) -> list[psutil.Process]:
        """Return every live process that carries this session's environment marker."""
        found = []
        for proc in psutil.process_iter(["pid"]):
            if proc.pid == os.getpid():
                continue
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(MARKER_ENV) == self.session_id:
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def listening(self) -> bool:
        """Return whether anything accepts connections on the API server's port."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            return sock.connect_ex(("127.0.0.1", self.api_port)) == 0

    def remove_files(self) -> None:
        """Delete the temporary folder."""
        shutil.rmtree(self.root, ignore_errors=True)

    # -- triggerer restart ----------------------------------------------------------------------------------

    def stop_triggerer(self, timeout: float = 60, name: str = "triggerer") -> tuple[int, float]:
        """Stop a triggerer with SIGTERM to its main process; return its exit code and when it was gone."""
        triggerer = self.processes[name]
        code = triggerer.terminate_main(timeout)
        # Its log server child must go too; anything left in the group is stopped.
        wait_until(lambda: not triggerer.group_members(), 30, "the triggerer's children to exit")
        return code, time.time()

    def start_triggerer(self, name: str = "triggerer") -> Process:
        """Start a new triggerer (its output goes to ``triggerer-N.log`` when one of that name ran before)."""
        return self.process(name, [AIRFLOW, "triggerer", *self.TRIGGERER_ARGS])

    # -- REST API --------------------------------------------------------------------------------------------

    @property
    def api(self) -> httpx.Client:
        """Return the authenticated REST API client."""
        assert self._api is not None, "Airflow is not started"
        return self._api

    def get(self, path: str, **params: Any) -> Any:
        """GET a REST API path and return the JSON answer."""
        response = self.api.get(path, params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        """PATCH a REST API path and return the JSON answer.

        SQLite has one writer at a time: on a loaded machine a task's start-up writes can hold the lock
        past the API server's busy timeout (5 s), and the PATCH then fails with a 500 "Database error"
        having changed nothing (its transaction rolled back). It is sent again, at most twice: the
        request is the same change either way, so the test stays deterministic about that race.
        """
        for _ in range(SQLITE_LOCKED_RETRIES):
            response = self.api.patch(path, json=body)
            if response.status_code != 500 or "Database error" not in response.text:
                break
            time.sleep(1)
        assert response.status_code == 200, f"PATCH {path}: {response.status_code} {response.text}"
        return response.json()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Trigger a DAG run and return its run ID (one made of safe characters, used in log paths)."""
        run_id = f"e2e__{dag_id}__{uuid.uuid4().hex[:8]}"
        response = self.api.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
        )
        assert response.status_code == 200, f"trigger {dag_id}: {response.status_code} {response.text}"
        self.triggered.append((dag_id, run_id))
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """Return a DAG run."""
        result: dict[str, Any] = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return result

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """Return a run's task instances by key (``task_id`` or ``task_id[map_index]``)."""
        found: dict[str, dict[str, Any]] = {}
        # Page by page: the API serves at most [api] maximum_page_limit (100) a page.
        while True:
            path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
            answer = self.get(path, limit=100, offset=len(found), order_by="id")
            found.update((ti_key(ti), ti) for ti in answer["task_instances"])
            if not answer["task_instances"] or len(found) >= answer["total_entries"]:
                return found

    def wait_runs(
        self, runs: list[tuple[str, str]], timeout: float = 240, interval: float = 0.5
    ) -> dict[tuple[str, str], RunResult]:
        """Poll runs until each has ended, recording every task state seen; return them by (dag_id, run_id)."""
        samples: dict[tuple[str, str], dict[str, list[tuple[float, str | None]]]] = {run: {} for run in runs}
        done: dict[tuple[str, str], RunResult] = {}

        def step() -> bool:
            self.assert_running()
            for dag_id, run_id in runs:
                if (dag_id, run_id) in done:
                    continue
                run = self.dag_run(dag_id, run_id)
                now = time.time()
                tis = self.task_instances(dag_id, run_id)
                for key, ti in tis.items():
                    samples[dag_id, run_id].setdefault(key, []).append((now, ti["state"]))
                if run["state"] in FINAL_RUN_STATES:
                    done[dag_id, run_id] = RunResult(dag_id, run_id, run["state"], run, tis, samples[dag_id, run_id])
            return len(done) == len(runs)

        def pending() -> str:
            lines = []
            for dag_id, run_id in runs:
                if (dag_id, run_id) not in done:
                    states = {key: values[-1][1] for key, values in samples[dag_id, run_id].items()}
                    lines.append(f"{dag_id} {run_id}: {states}")
            return "the runs to end:\n" + "\n".join(lines) + "\n" + self.logs_report()

        wait_until(step, timeout, pending, interval)
        return done

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 240) -> RunResult:
        """Poll one run until it has ended."""
        return self.wait_runs([(dag_id, run_id)], timeout)[dag_id, run_id]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """Return an XCom value of a task instance."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.get(path, map_index=map_index)["value"]

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        """Set a task instance's state as a user does in the UI (PATCH ``new_state``)."""
        return self.patch(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": state})

    # -- metadata database ----------------------------------------------------------------------------------

    def triggers(self) -> list[dict[str, Any]]:
        """Return every row of the ``trigger`` table, kwargs decrypted by Airflow's own Trigger model."""
        completed = subprocess.run(
            [sys.executable, "-c", TRIGGERS_SCRIPT],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        for line in completed.stdout.splitlines():
            if line.startswith("TRIGGERS_JSON:"):
                rows: list[dict[str, Any]] = json.loads(line.removeprefix("TRIGGERS_JSON:"))
                return rows
        raise AssertionError(f"Could not read the trigger table:\n{completed.stdout}\n{completed.stderr}")

    # -- logs ---------------------------------------------------------------------------------------------

    def task_log_files(self, dag_id: str, run_id: str, task_id: str) -> list[Path]:
        """Return a task instance's log files: the worker's and the triggerer's (``*.trigger.*``)."""
        folder = self.logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sorted(path for path in folder.rglob("*") if path.is_file())

    def task_log(self, dag_id: str, run_id: str, task_id: str, *, trigger: bool | None = None) -> str:
        """Return the text of a task's log files; ``trigger`` True: only the triggerer's, False: only the worker's."""
        texts = []
        for path in self.task_log_files(dag_id, run_id, task_id):
            is_trigger = ".trigger." in path.name
            if trigger is None or trigger == is_trigger:
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def logs_report(self, runs: list[tuple[str, str]] | None = None, lines: int = 120) -> str:
        """Return the end of every process log, and of the task logs of ``runs``."""
        parts = []
        for proc in [*self.retired, *self.processes.values()]:
            parts.append(f"===== {proc.log_path.name} (pid {proc.popen.pid if proc.popen else '-'}) =====")
            parts.append(proc.log_tail(lines))
        for dag_id, run_id in runs or []:
            folder = self.logs / f"dag_id={dag_id}" / f"run_id={run_id}"
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                parts.append(f"===== {path.relative_to(self.logs)} =====")
                parts.append(tail(path, 60))
        return "\n".join(parts)

    # -- emulator -------------------------------------------------------------------------------------------

    @property
    def emulator(self) -> httpx.Client:
        """Return a client of the emulator's root URL."""
        assert self._emulator is not None, "the emulator is not started"
        return self._emulator

    def emulator_settings(self, **settings: float) -> dict[str, float]:
        """Change the emulator's cancel_delay and latency (for cancels requested from now on)."""
        response = self.emulator.post("/_emulator/settings", json=settings)
        assert response.status_code == 200, response.text
        result: dict[str, float] = response.json()
        return result

    def create_batch(self, **fields: Any) -> dict[str, Any]:
        """Create a batch on the emulator (``in_progress`` unless told otherwise)."""
        response = self.emulator.post("/_emulator/batches", json=fields)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def journal(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """Return the emulator's journal entries, optionally filtered (``path`` is a glob)."""
        params = {name: value for name, value in (("method", method), ("path", path)) if value}
        response = self.emulator.get("/_emulator/journal", params=params)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()
        return entries

    def batch_polls(self, batch_id: str) -> list[float]:
        """Return when the emulator received each GET of a batch."""
        return [entry["time"] for entry in self.journal("GET", f"/v1/batches/{batch_id}")]

    def batch_cancels(self, batch_id: str) -> list[dict[str, Any]]:
        """Return the cancel requests of a batch."""
        return self.journal("POST", f"/v1/batches/{batch_id}/cancel")

    def batch(self, batch_id: str) -> dict[str, Any]:
        """Return a batch as the API shows it now (not journaled as a poll: read through the history)."""
        response = self.emulator.get(f"/_emulator/history/{batch_id}")
        assert response.status_code == 200, response.text
        history = response.json()
        return {"id": batch_id, "status": history[-1][1], "history": history}


@contextmanager
def running(stack: S, emulator_cancel_delay: float, dag_ids: set[str], failed_logs: Path | None = None) -> Iterator[S]:
    """Start ``stack``, wait for ``dag_ids`` (unpaused), yield it; then stop it and check nothing is left.

    With ``failed_logs``, the process and task logs of a stack whose tests failed are copied there first.
    """
    RUNNING_STACKS.append(stack)
    try:
        stack.start(emulator_cancel_delay=emulator_cancel_delay)
        stack.wait_for_dags(dag_ids, set(stack.dag_files))
        yield stack
    finally:
        leftovers = stack.stop()
        if failed_logs is not None and stack.failed_tests:
            shutil.rmtree(failed_logs, ignore_errors=True)
            shutil.copytree(stack.process_logs, failed_logs / "processes")
            shutil.copytree(stack.logs, failed_logs / "tasks")
        stack.remove_files()
        RUNNING_STACKS.remove(stack)
        # The final check: nothing the suite started outlives it, and no file stays behind.
        assert not leftovers, f"processes of the e2e suite still running after the teardown: {leftovers}"
        assert not stack.root.exists(), f"{stack.root} was not removed"
        assert not stack.listening(), f"something still listens on the API server's port {stack.api_port}"
