"""Provider metadata read by Airflow's ProvidersManager; plain data, no heavy imports."""

from __future__ import annotations

from typing import Any

from airflow_psopenai import __version__
from airflow_psopenai.hooks.connection_form import provider_info_fields


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
        "operators": [
            {
                "integration-name": "PSOpenAI",
                "python-modules": ["airflow_psopenai.operators.stop", "airflow_psopenai.operators.stop_batches"],
            }
        ],
        "sensors": [{"integration-name": "PSOpenAI", "python-modules": ["airflow_psopenai.sensors.cancelled"]}],
        "triggers": [{"integration-name": "PSOpenAI", "python-modules": ["airflow_psopenai.triggers.status"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_psopenai.hooks.psopenai.PSOpenAIHook",
                "hook-name": "PSOpenAI (OpenAI API)",
                "connection-type": "psopenai",
                **provider_info_fields(),
            }
        ],
        "extra-links": [
            "airflow_psopenai.operators.stop.OpenAIBatchLink",
            "airflow_psopenai.operators.stop.OpenAIFineTuningJobLink",
        ],
    }
