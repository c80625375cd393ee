"""Async triggers for deferrable waits."""

from __future__ import annotations

from airflow_psopenai.triggers.status import ResourceSetStatusTrigger, ResourceStatusTrigger

__all__ = ["ResourceSetStatusTrigger", "ResourceStatusTrigger"]
