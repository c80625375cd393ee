"""Operators that cancel OpenAI Batches, thread runs and background responses."""

from __future__ import annotations

from airflow_psopenai.operators.stop import StopBatchOperator, StopResponseOperator, StopThreadRunOperator

__all__ = ["StopBatchOperator", "StopResponseOperator", "StopThreadRunOperator"]
