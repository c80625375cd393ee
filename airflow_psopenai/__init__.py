"""Apache Airflow provider to cancel OpenAI Batches, background Responses and thread runs, and wait until they are."""

from __future__ import annotations

__version__ = "0.1.0"
