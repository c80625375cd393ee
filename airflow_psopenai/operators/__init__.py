"""Operators that cancel OpenAI Batches, thread runs and background responses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_psopenai.operators.stop import StopBatchOperator, StopResponseOperator, StopThreadRunOperator

if TYPE_CHECKING:
    from airflow_psopenai.operators.stop_batches import StopBatchesOperator
    from airflow_psopenai.operators.sweep import StopOrphanedBatchesOperator

__all__ = [
    "StopBatchOperator",
    "StopBatchesOperator",
    "StopOrphanedBatchesOperator",
    "StopResponseOperator",
    "StopThreadRunOperator",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: an operator class costs milliseconds at DAG-parse time.
    if name == "StopBatchesOperator":
        from airflow_psopenai.operators.stop_batches import StopBatchesOperator

        return StopBatchesOperator
    if name == "StopOrphanedBatchesOperator":
        from airflow_psopenai.operators.sweep import StopOrphanedBatchesOperator

        return StopOrphanedBatchesOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
