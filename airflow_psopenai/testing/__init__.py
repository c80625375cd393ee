"""An OpenAI API emulator for tests, benchmarks and demos: batches, thread runs and background responses.

It serves the retrieve, list and cancel endpoints over real HTTP (``/v1``, Azure's ``/openai`` and
``/openai/v1``), moves statuses through ``cancelling`` to ``cancelled`` after ``cancel_delay``, and
injects faults: rate limits, quota errors, 5xx in JSON or HTML, latency, hangs and dropped
connections (see :class:`~airflow_psopenai.testing.faults.Fault`). Every API request is kept in
:attr:`OpenAIEmulator.journal <airflow_psopenai.testing.emulator.OpenAIEmulator.journal>`.

In pytest, enable the ``openai_emulator`` fixture, and ``run_dag`` to run whole DAGs against it
(:mod:`airflow_psopenai.testing.pytest_plugin`), with
``pytest_plugins = ["airflow_psopenai.testing.pytest_plugin"]``; from a shell, run
``python -m airflow_psopenai.testing --help``.
"""

from __future__ import annotations

from airflow_psopenai.testing.dag_tests import DagRunResult
from airflow_psopenai.testing.emulator import DEFAULT_API_KEY, OpenAIEmulator
from airflow_psopenai.testing.faults import Fault
from airflow_psopenai.testing.journal import JournalEntry
from airflow_psopenai.testing.objects import BatchSchedule
from airflow_psopenai.testing.state import ApiError, ManualClock

__all__ = [
    "DEFAULT_API_KEY",
    "ApiError",
    "BatchSchedule",
    "DagRunResult",
    "Fault",
    "JournalEntry",
    "ManualClock",
    "OpenAIEmulator",
]
