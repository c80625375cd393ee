"""Sensors that wait until an OpenAI Batch, thread run or background response is cancelled."""

from __future__ import annotations

from airflow_psopenai.sensors.cancelled import BatchCancelledSensor, ResponseCancelledSensor, ThreadRunCancelledSensor

__all__ = ["BatchCancelledSensor", "ResponseCancelledSensor", "ThreadRunCancelledSensor"]
