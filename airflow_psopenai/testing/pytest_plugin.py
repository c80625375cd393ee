"""The ``openai_emulator`` pytest fixture.

Enable it with ``pytest_plugins = ["airflow_psopenai.testing.pytest_plugin"]`` in a top-level
``conftest.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.testing.emulator import OpenAIEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator

FIXTURE_CANCEL_DELAY = 0.2


@pytest.fixture
def openai_emulator() -> Iterator[OpenAIEmulator]:
    """Yield a running emulator (free port on 127.0.0.1, ``cancel_delay`` 0.2 s), stopped afterwards."""
    with OpenAIEmulator(cancel_delay=FIXTURE_CANCEL_DELAY) as emulator:
        yield emulator
