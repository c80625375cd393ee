"""Sensors that wait until an OpenAI Batch, thread run, background response, fine-tuning job, eval run or
vector store file batch is cancelled."""

from __future__ import annotations

from airflow_psopenai.sensors.cancelled import (
    BatchCancelledSensor,
    EvalRunCancelledSensor,
    FineTuningJobCancelledSensor,
    ResponseCancelledSensor,
    ThreadRunCancelledSensor,
    VectorStoreFileBatchCancelledSensor,
)

__all__ = [
    "BatchCancelledSensor",
    "EvalRunCancelledSensor",
    "FineTuningJobCancelledSensor",
    "ResponseCancelledSensor",
    "ThreadRunCancelledSensor",
    "VectorStoreFileBatchCancelledSensor",
]
