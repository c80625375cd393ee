"""The production topology: tests/e2e/stack.py's Airflow on PostgreSQL, Redis and the CeleryExecutor.

PostgreSQL (a private data directory, owned by and run as the ``postgres`` user, on a free port,
its unix socket in the temporary folder) holds the metadata; Redis (a free port, no persistence) is
Celery's broker. Airflow runs one Celery worker, the scheduler, the DAG processor, the API server
and two triggerers; every process in a process group of its own, its log in ``process-logs/``.

The simple auth manager has one real user with a password (the browser logs in with it), and
connection testing is on (the form's Test button).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.stack import AIRFLOW, MARKER_ENV, REPO, AirflowStack, Process, tail, wait_until
from tests.ports import free_port

CLUSTER_DAGS = Path(__file__).resolve().parent / "dags"
# StopBatchesOperator's DAGs of the unit tests run here as they are.
BULK_DAGS = REPO / "tests" / "dags" / "psopenai_bulk_dags.py"
PG_USER = "postgres"
DB_NAME = "airflow"
ADMIN = "admin"
WORKER_CONCURRENCY = 16
# Lower than Airflow's defaults (30 s, 300 s), so that the failover tests take seconds, not minutes;
# well above the heartbeats' 1 s (triggerer) and 5 s (task) on a loaded two-core machine.
TRIGGERER_HEALTH_CHECK_THRESHOLD_SEC = 10
TASK_HEARTBEAT_TIMEOUT_SEC = 20
# Neither triggerer can hold all 120 waits of the load test: both must run some.
TRIGGERER_CAPACITY = 80
# Airflow's own default, stated because the worker-kill test relies on it: Redis gives an unacknowledged
# Celery message of a killed worker to another worker only after this long.
CELERY_VISIBILITY_TIMEOUT_SEC = 21600


def postgres_bin() -> Path:
    """Return the folder of Debian's newest PostgreSQL server programs."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda path: int(path.parts[-3].split(".")[0])
    )
    assert candidates, "no PostgreSQL server under /usr/lib/postgresql: make e2e-cluster installs Debian's postgresql"
    return candidates[-1].parent


class ClusterStack(AirflowStack):
    """PostgreSQL, Redis, the emulator, and Airflow with a Celery worker and two triggerers."""

    TRIGGERERS = ("triggerer-a", "triggerer-b")
    # The task logs are files on this machine, which the API server reads itself; no log server is needed.
    TRIGGERER_ARGS = ("--skip-serve-logs",)

    def __init__(self) -> None:
        """Prepare the folders (the PostgreSQL ones owned by its user) and the ports; nothing runs yet."""
        super().__init__()
        # The postgres user must reach its folders inside our private one.
        self.root.chmod(0o711)
        self.pg_data = self.root / "postgres-data"
        self.pg_socket = self.root / "postgres-socket"
        for folder in (self.pg_data, self.pg_socket):
            folder.mkdir(mode=0o700)
            shutil.chown(folder, PG_USER, PG_USER)
        self.pg_port = free_port()
        self.redis_port = free_port()
        self.admin_password = secrets.token_urlsafe(16)
        self.passwords_file = self.root / "passwords.json"
        self.passwords_file.write_text(json.dumps({ADMIN: self.admin_password}))
        self.workers = 0
        self.triggerer_job_of: dict[str, int] = {}  # triggerer process name -> the job ID of its latest start

    # -- life cycle ---------------------------------------------------------------------------------------

    def dag_sources(self) -> list[Path]:
        """Return tests/e2e's DAGs and the examples, the cluster's own DAGs and the StopBatchesOperator DAGs."""
        return [*super().dag_sources(), *sorted(CLUSTER_DAGS.glob("*.py")), BULK_DAGS]

    def database_url(self, scheme: str = "postgresql+psycopg2") -> str:
        """Return the SQLAlchemy URL of the metadata database (over the unix socket)."""
        return f"{scheme}://{PG_USER}@/{DB_NAME}?host={self.pg_socket}&port={self.pg_port}"

    def build_env(self) -> dict[str, str]:
        """Return tests/e2e's environment on PostgreSQL and Celery, with a user, a password and connection tests."""
        env = super().build_env()
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url(),
                "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": self.database_url("db+postgresql+psycopg2"),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(CELERY_VISIBILITY_TIMEOUT_SEC),
                # 122 tasks of one run at once; deferred ones hold no executor slot.
                "AIRFLOW__CORE__PARALLELISM": "32",
                "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "200",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_CHECK_THRESHOLD_SEC),
                "AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERER_CAPACITY),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT_SEC),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            }
        )
        return env

    def start(self, emulator_cancel_delay: float) -> None:
        """Start PostgreSQL and Redis, then the emulator and Airflow."""
        self.start_postgres()
        self.start_redis()
        super().start(emulator_cancel_delay)

    def start_postgres(self) -> None:
        """Create a private cluster as the postgres user, start it and create the metadata database."""
        bin_dir = postgres_bin()
        initdb_log = self.process_logs / "initdb.log"
        with initdb_log.open("wb") as log:
            completed = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.pg_data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"],
                user=PG_USER,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                timeout=120,
                check=False,
            )
        assert completed.returncode == 0, f"initdb failed:\n{tail(initdb_log)}"
        settings = {
            "listen_addresses": "",
            "port": str(self.pg_port),
            "unix_socket_directories": str(self.pg_socket),
            "max_connections": "300",
            # A throw-away database: durability buys nothing here and costs the two cores time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        argv = [str(bin_dir / "postgres"), "-D", str(self.pg_data)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        self.process("postgres", argv, env=self.service_env(), user=PG_USER)
        wait_until(self._postgres_ready, 60, lambda: f"PostgreSQL to accept connections\n{self.logs_report()}")
        self.sql(f"CREATE DATABASE {DB_NAME}", database="postgres", autocommit=True)

    def start_redis(self) -> None:
        """Start Redis on a free port of the loopback, without persistence."""
        redis_dir = self.root / "redis"
        redis_dir.mkdir()
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        argv += ["no", "--dir", str(redis_dir)]
        self.process("redis", argv, env=self.service_env())
        wait_until(
            lambda: "Ready to accept connections" in self.processes["redis"].log_tail(),
            60,
            lambda: f"Redis to be ready\n{self.logs_report()}",
        )

    def service_env(self) -> dict[str, str]:
        """Return the environment of PostgreSQL and Redis: no Airflow setting, and the session marker."""
        return {**self.base_env(), MARKER_ENV: self.session_id}

    def _postgres_ready(self) -> bool:
        import psycopg2

        postgres = self.processes["postgres"]
        assert postgres.running(), f"PostgreSQL exited:\n{postgres.log_tail()}"
        try:
            self.sql("SELECT 1", database="postgres")
        except psycopg2.OperationalError:  # not listening yet, or still starting up
            return False
        return True

    def start_services(self) -> None:
        """Start the API server, the scheduler, the DAG processor, both triggerers and a Celery worker."""
        super().start_services()
        self.start_worker()

    def start_worker(self) -> Process:
        """Start a new Celery worker (``worker-N``, a fresh one after a kill)."""
        self.workers += 1
        argv = [AIRFLOW, "celery", "worker", "--concurrency", str(WORKER_CONCURRENCY)]
        argv += ["--celery-hostname", f"worker-{self.workers}@%h", "--skip-serve-logs"]
        return self.process("worker", argv)

    def _healthy(self) -> bool:
        """Airflow's health, both triggerers heartbeating, and the Celery worker consuming."""
        return super()._healthy() and len(self.live_triggerers()) == 2 and self.worker_ready()

    def worker_ready(self) -> bool:
        """Return whether the current Celery worker has said it is ready."""
        return bool(re.search(rf"worker-{self.workers}@\S+ ready\.", self.processes["worker"].log_tail()))

    def access_token(self) -> str:
        """Return a REST API token for the admin user (logging in with the password, as a user would)."""
        token = httpx.post(
            f"{self.api_url}/auth/token", json={"username": ADMIN, "password": self.admin_password}, timeout=30
        )
        assert token.status_code in (200, 201), token.text
        return str(token.json()["access_token"])

    # -- metadata database ----------------------------------------------------------------------------------

    def sql(self, query: str, *params: Any, database: str = DB_NAME, autocommit: bool = False) -> list[tuple[Any, ...]]:
        """Run one statement on the metadata database (as the test reads it, not through Airflow)."""
        import psycopg2

        connection = psycopg2.connect(host=str(self.pg_socket), port=self.pg_port, user=PG_USER, dbname=database)
        try:
            connection.autocommit = autocommit
            with connection.cursor() as cursor:
                cursor.execute(query, params or None)
                rows = cursor.fetchall() if cursor.description else []
            connection.commit()
            return [tuple(row) for row in rows]
        finally:
            connection.close()

    def live_triggerers(self) -> set[int]:
        """Return the job IDs of the triggerers that heartbeat within the health-check threshold."""
        rows = self.sql(
            "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'"
            " AND latest_heartbeat > now() - make_interval(secs => %s)",
            TRIGGERER_HEALTH_CHECK_THRESHOLD_SEC,
        )
        return {int(row[0]) for row in rows}

    def triggerer_of_tasks(self, dag_id: str, run_id: str) -> dict[str, int | None]:
        """Return, for each deferred task of a run, the triggerer job that holds its trigger (None: unassigned)."""
        rows = self.sql(
            "SELECT ti.task_id, ti.map_index, t.triggerer_id FROM task_instance ti"
            " JOIN trigger t ON t.id = ti.trigger_id WHERE ti.dag_id = %s AND ti.run_id = %s",
            dag_id,
            run_id,
        )
        return {(task if index < 0 else f"{task}[{index}]"): triggerer for task, index, triggerer in rows}

    def triggerer_jobs(self) -> set[int]:
        """Return the job IDs of every triggerer that ever started."""
        return {int(row[0]) for row in self.sql("SELECT id FROM job WHERE job_type = 'TriggererJob'")}

    def start_triggerer(self, name: str = "triggerer") -> Process:
        """Start a triggerer and learn its job ID (the job table does not name the process)."""
        before = self.triggerer_jobs()
        proc = super().start_triggerer(name)
        new = wait_until(lambda: self.triggerer_jobs() - before, 120, lambda: f"{name}'s job\n{proc.log_tail()}")
        (self.triggerer_job_of[name],) = new
        return proc

    def running_triggerer_jobs(self) -> set[int]:
        """Return the job IDs of the triggerer processes running now."""
        return {job for name, job in self.triggerer_job_of.items() if self.processes[name].running()}

    def triggerer_process(self, job_id: int) -> Process:
        """Return the triggerer process whose job is ``job_id``."""
        (name,) = [name for name, job in self.triggerer_job_of.items() if job == job_id]
        return self.processes[name]
