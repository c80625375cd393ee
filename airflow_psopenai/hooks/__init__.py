"""The hook through which everything in this provider talks to the OpenAI API."""

from __future__ import annotations

from airflow_psopenai.hooks.psopenai import PSOpenAIHook

__all__ = ["PSOpenAIHook"]
