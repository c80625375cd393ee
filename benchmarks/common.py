"""What the benchmarks share: the emulator in its own process, the Airflow environment, worker processes."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
API_KEY = "sk-bench-0123456789abcdef"
OURS_CONN_ID = "psopenai_bench"
OFFICIAL_CONN_ID = "openai_bench"
OURS = "ours"
OFFICIAL = "official"
SIDES = (OURS, OFFICIAL)
# Printed by a worker before its JSON result, so stray output on stdout cannot be mistaken for it.
RESULT_MARK = "BENCH-RESULT "


class BenchError(RuntimeError):
    """A benchmark could not be measured (a worker failed, the emulator did not start)."""


# -- the emulator, in a process of its own ---------------------------------------------------------------


class EmulatorProcess:
    """The OpenAI emulator's CLI in a child process, driven through its admin endpoints.

    Use it as a context manager: the process is stopped on exit, even on error (SIGTERM, then SIGKILL).

    :param latency: Seconds the emulator adds to every API answer.
    :param cancel_delay: Seconds a batch stays ``cancelling`` before it turns ``cancelled``.
    """

    def __init__(self, *, latency: float, cancel_delay: float, startup_timeout: float = 60.0) -> None:
        self.latency = latency
        self.cancel_delay = cancel_delay
        self.startup_timeout = startup_timeout
        self.api_base = ""
        self.base_url = ""
        self._process: subprocess.Popen[str] | None = None
        self._admin: httpx.Client | None = None
        # Its stderr; removed when the emulator stops (its tail is in the error when it fails to start).
        self._log = tempfile.TemporaryFile(prefix="psopenai-bench-emulator-")  # noqa: SIM115

    def __enter__(self) -> EmulatorProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the CLI and read the API base it prints first."""
        command = [
            sys.executable,
            "-m",
            "airflow_psopenai.testing",
            "--port",
            "0",
            "--api-key",
            API_KEY,
            "--latency",
            f"{self.latency:g}",
            "--cancel-delay",
            f"{self.cancel_delay:g}",
        ]
        self._process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log, text=True, start_new_session=True
        )
        line = _read_line(self._process, self.startup_timeout)
        if not line.startswith("http"):
            self._log.seek(0)
            errors = self._log.read().decode(errors="replace")[-3000:]
            raise BenchError(f"The emulator did not print its API base (got {line!r}):\n{errors}")
        self.api_base = line.strip()
        self.base_url = self.api_base.removesuffix("/v1")
        self._admin = httpx.Client(base_url=f"{self.base_url}/_emulator", timeout=120)

    def stop(self) -> None:
        """Stop the emulator (idempotent)."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)
            if process.stdout is not None:
                process.stdout.close()
        self._log.close()

    @property
    def pid(self) -> int:
        """Return the emulator's process id."""
        assert self._process is not None
        return self._process.pid

    @property
    def admin(self) -> httpx.Client:
        """Return the client of the admin endpoints."""
        if self._admin is None:
            raise BenchError("The emulator is not running.")
        return self._admin

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.admin.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        """Forget every object, fault and journal entry (the journal grows without limit otherwise)."""
        self._call("POST", "/reset")

    def settings(self, **values: float) -> dict[str, float]:
        """Set (and return) the emulator's ``cancel_delay`` and ``latency``."""
        result: dict[str, float] = self._call("POST", "/settings", json=values)
        return result

    def create_batch(self, status: str) -> dict[str, Any]:
        """Create one batch in ``status``."""
        batch: dict[str, Any] = self._call("POST", "/batches", json={"status": status})
        return batch

    def journal(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """Return the journal entries (optionally filtered by method and path glob)."""
        params = {name: value for name, value in (("method", method), ("path", path)) if value}
        entries: list[dict[str, Any]] = self._call("GET", "/journal", params=params)
        return entries

    def set_random_faults(
        self, *, rate: float, seed: int, faults: Sequence[Mapping[str, Any]], method: str, path: str
    ) -> None:
        """Inject one of ``faults`` into each matching request with probability ``rate``."""
        body = {"random": {"rate": rate, "seed": seed, "faults": list(faults), "method": method, "path": path}}
        self._call("POST", "/faults", json=body)

    def cpu_seconds(self) -> float:
        """Return the user + system CPU seconds the emulator process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        # utime and stime are fields 14 and 15 of /proc/PID/stat; after the ")" they are the 12th and 13th.
        return (int(fields[11]) + int(fields[12])) / ticks


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """Return the first line of a child's stdout, or raise when it does not come within ``timeout``."""
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not lines:
        raise BenchError(f"The emulator printed nothing within {timeout:g} s (exit status {process.poll()}).")
    return lines[0]


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop a child started with ``start_new_session=True``: SIGTERM to its group, SIGKILL after ``grace``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def create_batches(admin_base: str, n: int, status: str) -> list[tuple[str, float]]:
    """Create ``n`` batches in ``status`` on the emulator; return their IDs with the time each request was sent.

    Plain ``http.client`` on one keep-alive connection (about a fifth of httpx's CPU per request), so a
    thousand batches are created within a fraction of a second.

    :param admin_base: The emulator's admin root, ``http://127.0.0.1:PORT/_emulator``.
    """
    url = urlsplit(admin_base)
    connection = http.client.HTTPConnection(url.netloc, timeout=60)
    body = json.dumps({"status": status})
    headers = {"Content-Type": "application/json"}
    created: list[tuple[str, float]] = []
    try:
        for _ in range(n):
            sent = time.time()
            connection.request("POST", f"{url.path}/batches", body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise BenchError(f"Creating a batch failed: HTTP {response.status} {data[:200]!r}")
            created.append((str(json.loads(data)["id"]), sent))
    finally:
        connection.close()
    return created


# -- Airflow's environment for the measured processes ------------------------------------------------------


@contextlib.contextmanager
def airflow_home() -> Iterator[Path]:
    """Yield a private, temporary AIRFLOW_HOME (removed afterwards)."""
    home = Path(tempfile.mkdtemp(prefix="psopenai-bench-airflow-"))
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def worker_env(home: Path, api_base: str = "", **extra_conn: Mapping[str, Any]) -> dict[str, str]:
    """Return the environment of a measured process: a private Airflow home, and both connections.

    Outside a task, Airflow's connection lookup reads ``AIRFLOW_CONN_<ID>`` variables (JSON form).

    :param extra_conn: Extras of the connections, by side (``ours=...``, ``official=...``).
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith(("OPENAI_", "AIRFLOW_CONN_"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        }
    )
    if api_base:
        ours = {"conn_type": "psopenai", "host": api_base, "password": API_KEY, "extra": extra_conn.get(OURS, {})}
        official = {
            "conn_type": "openai",
            "host": api_base,
            "password": API_KEY,
            "extra": extra_conn.get(OFFICIAL, {}),
        }
        env[f"AIRFLOW_CONN_{OURS_CONN_ID.upper()}"] = json.dumps(ours)
        env[f"AIRFLOW_CONN_{OFFICIAL_CONN_ID.upper()}"] = json.dumps(official)
    return env


# -- worker processes ------------------------------------------------------------------------------------


def run_worker(module: str, arguments: Mapping[str, Any], env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Run ``python -m module --worker JSON`` in a fresh process and return the JSON it reports.

    The worker is killed (with its process group) when it runs longer than ``timeout`` seconds.
    """
    command = [sys.executable, "-m", module, "--worker", json.dumps(arguments)]
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=dict(env), stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
        )
        try:
            stdout, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(process, grace=5)
            raise BenchError(f"{module} {arguments} ran longer than {timeout:g} s and was killed.") from None
        finally:
            stop_process(process, grace=5)
        log.seek(0)
        errors = log.read()
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_MARK))
            return result
    tail = "\n".join(errors.splitlines()[-30:])
    raise BenchError(f"{module} {arguments} reported no result (exit status {process.returncode}):\n{tail}")


def report(result: Mapping[str, Any]) -> None:
    """Print a worker's result for :func:`run_worker`."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def current_rss_mb() -> float:
    """Return this process's resident set size now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    """Return this process's RSS high-water mark (``ru_maxrss``, KiB on Linux), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def exit_on_signals() -> None:
    """Turn SIGTERM and SIGHUP into ``SystemExit``, so that every ``with`` block stops its processes.

    The emulator and the workers run in sessions of their own (they get no signal from the terminal):
    only the ``finally`` blocks of this process stop them.
    """

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, leave)


def pyplot() -> Any:
    """Return matplotlib's pyplot on the Agg backend (plots to files, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_average() -> tuple[float, float, float]:
    """Return the 1, 5 and 15 minute load averages."""
    return os.getloadavg()


def wait_for_quiet_machine(limit: float = 1.5, patience: float = 60.0) -> float:
    """Wait up to ``patience`` seconds for the 1-minute load average to drop below ``limit``; return it."""
    deadline = time.monotonic() + patience
    load = os.getloadavg()[0]
    while load > limit and time.monotonic() < deadline:
        time.sleep(5)
        load = os.getloadavg()[0]
    return load
