"""Async triggers for deferrable waits."""

from __future__ import annotations

from airflow_psopenai.triggers.status import ResourceStatusTrigger

__all__ = ["ResourceStatusTrigger"]
