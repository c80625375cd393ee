"""Apache Airflow provider to cancel OpenAI Batches and thread runs and wait until they are cancelled."""

from __future__ import annotations

__version__ = "0.1.0"
