"""Operators that cancel OpenAI Batches, thread runs, background responses, fine-tuning jobs, eval runs and
vector store file batches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_psopenai.operators.stop import (
    StopBatchOperator,
    StopEvalRunOperator,
    StopFineTuningJobOperator,
    StopResponseOperator,
    StopThreadRunOperator,
    StopVectorStoreFileBatchOperator,
)

if TYPE_CHECKING:
    from airflow_psopenai.operators.stop_batches import StopBatchesOperator
    from airflow_psopenai.operators.sweep import StopOrphanedBatchesOperator

__all__ = [
    "StopBatchOperator",
    "StopBatchesOperator",
    "StopEvalRunOperator",
    "StopFineTuningJobOperator",
    "StopOrphanedBatchesOperator",
    "StopResponseOperator",
    "StopThreadRunOperator",
    "StopVectorStoreFileBatchOperator",
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
