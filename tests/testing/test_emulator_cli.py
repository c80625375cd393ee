"""``python -m airflow_psopenai.testing``: prints the API base first, serves, stops on a signal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import pytest

from tests.ports import free_port


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_a_signal(signum: signal.Signals) -> None:
    port = free_port()
    command = [
        sys.executable,
        *("-m", "airflow_psopenai.testing", "--port", str(port), "--api-key", "sk-cli-test-key"),
        *("--cancel-delay", "0.5", "--latency", "0.01"),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            api_base = process.stdout.readline().strip()
            assert api_base == f"http://127.0.0.1:{port}/v1"
            root = api_base.removesuffix("/v1")
            assert httpx.get(f"{root}/_emulator/settings").json() == {"cancel_delay": 0.5, "latency": 0.01}
            batch = httpx.post(f"{root}/_emulator/batches", json={}).json()
            cancelled = httpx.post(
                f"{api_base}/batches/{batch['id']}/cancel", headers={"Authorization": "Bearer sk-cli-test-key"}
            )
            assert cancelled.json()["status"] == "cancelling"
            process.send_signal(signum)
            assert process.wait(timeout=10) == 0
            assert process.stdout.read() == ""
        finally:
            process.kill()


def test_default_port_is_a_free_one() -> None:
    command = [sys.executable, "-m", "airflow_psopenai.testing"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            assert process.stdout is not None
            api_base = process.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", api_base)
            assert httpx.get(api_base.removesuffix("/v1") + "/_emulator/settings").json()["cancel_delay"] == 5.0
            assert httpx.get(f"{api_base}/batches", headers={"api-key": "sk-emulator-key"}).status_code == 200
            process.terminate()
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_psopenai.testing", "--help"], capture_output=True, text=True, check=True
    )
    for option in ("--host", "--port", "--api-key", "--cancel-delay", "--latency"):
        assert option in result.stdout
