"""Operators that cancel OpenAI Batches, thread runs and background responses."""

from __future__ import annotations

from airflow_psopenai.operators.stop import StopBatchOperator, StopResponseOperator, StopThreadRunOperator
from airflow_psopenai.operators.stop_batches import StopBatchesOperator

__all__ = ["StopBatchOperator", "StopBatchesOperator", "StopResponseOperator", "StopThreadRunOperator"]
