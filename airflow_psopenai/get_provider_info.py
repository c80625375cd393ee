"""Provider metadata read by Airflow's ProvidersManager; plain data, no heavy imports."""

from __future__ import annotations

from typing import Any

from airflow_psopenai import __version__


def get_provider_info() -> dict[str, Any]:
    """Return the provider's registration data."""
    return {
        "package-name": "airflow-psopenai",
        "name": "PSOpenAI cancel",
        "description": "Cancel OpenAI Batches, background Responses and thread runs from DAGs, wait until "
        "they are cancelled, and pass the result on.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "PSOpenAI",
                "external-doc-url": "https://platform.openai.com/docs/api-reference/batch/cancel",
                "tags": ["ai", "openai"],
            }
        ],
        "hooks": [{"integration-name": "PSOpenAI", "python-modules": ["airflow_psopenai.hooks.psopenai"]}],
        "operators": [{"integration-name": "PSOpenAI", "python-modules": ["airflow_psopenai.operators.stop"]}],
        "sensors": [{"integration-name": "PSOpenAI", "python-modules": ["airflow_psopenai.sensors.cancelled"]}],
        "triggers": [{"integration-name": "PSOpenAI", "python-modules": ["airflow_psopenai.triggers.status"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_psopenai.hooks.psopenai.PSOpenAIHook",
                "hook-name": "PSOpenAI (OpenAI API)",
                "connection-type": "psopenai",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "API base", "password": "API key"},
                    "placeholders": {
                        "host": "https://api.openai.com/v1 (Azure: https://RESOURCE.openai.azure.com)",
                        "password": "sk-... (or leave empty to use OPENAI_API_KEY)",
                    },
                },
                "conn-fields": {
                    "organization": {
                        "label": "Organization",
                        "schema": {"type": ["string", "null"]},
                        "description": "Sent as OpenAI-Organization when set.",
                    },
                    "project": {
                        "label": "Project",
                        "schema": {"type": ["string", "null"]},
                        "description": "Sent as OpenAI-Project when set.",
                    },
                    "api_type": {
                        "label": "API type",
                        "schema": {"type": ["string", "null"], "enum": ["openai", "azure", None]},
                        "description": "openai (default) or azure.",
                    },
                    "auth_type": {
                        "label": "Auth type",
                        "schema": {"type": ["string", "null"], "enum": ["api_key", "entra_id", None]},
                        "description": "api_key (default) or entra_id (Azure: the password is an Entra ID token).",
                    },
                    "api_version": {
                        "label": "Azure API version",
                        "schema": {"type": ["string", "null"]},
                        "description": "api-version query for Azure (default 2025-04-01-preview).",
                    },
                    "timeout_sec": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"], "minimum": 0},
                        "description": "Per-request limit; 0 means no overall limit.",
                    },
                    "max_retry_count": {
                        "label": "Max retry count",
                        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                        "description": "Retries of a failed call (0 to 100, default 0).",
                    },
                },
            }
        ],
        "extra-links": ["airflow_psopenai.operators.stop.OpenAIBatchLink"],
    }
