"""Operators that cancel OpenAI Batches and thread runs."""

from __future__ import annotations

from airflow_psopenai.operators.stop import StopBatchOperator, StopThreadRunOperator

__all__ = ["StopBatchOperator", "StopThreadRunOperator"]
