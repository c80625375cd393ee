"""Sensors that wait until an OpenAI Batch or thread run is cancelled."""

from __future__ import annotations

from airflow_psopenai.sensors.cancelled import BatchCancelledSensor, ThreadRunCancelledSensor

__all__ = ["BatchCancelledSensor", "ThreadRunCancelledSensor"]
