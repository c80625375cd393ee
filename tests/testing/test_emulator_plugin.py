"""The ``openai_emulator`` fixture, in this suite and in a user's project."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_psopenai.testing import OpenAIEmulator


def test_fixture_gives_a_running_emulator(openai_emulator: OpenAIEmulator) -> None:
    assert openai_emulator.cancel_delay == 0.2
    assert openai_emulator.api_key == "sk-emulator-key"
    assert httpx.get(f"{openai_emulator.api_base}/batches").status_code == 401


def test_users_enable_the_fixture_with_pytest_plugins(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["airflow_psopenai.testing.pytest_plugin"]\n')
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import time

            import openai


            def test_cancel(openai_emulator):
                batch = openai_emulator.create_batch()
                client = openai.OpenAI(base_url=openai_emulator.api_base, api_key=openai_emulator.api_key)
                assert client.batches.cancel(batch["id"]).status == "cancelling"
                time.sleep(openai_emulator.cancel_delay)
                assert client.batches.retrieve(batch["id"]).status == "cancelled"
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
