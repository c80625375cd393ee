"""The hook through which everything in this provider talks to the OpenAI API, and its connection form."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_psopenai.hooks.psopenai import PSOpenAIHook

__all__ = ["PSOpenAIHook"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the provider's info reads the connection form without loading the HTTP client.
    if name == "PSOpenAIHook":
        from airflow_psopenai.hooks.psopenai import PSOpenAIHook

        return PSOpenAIHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
