"""A DAG run whose batches keep running after it ends, for the OpenAI page's tests (tests/web/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, task

START = datetime(2024, 1, 1)


@task
def submit(**context: Any) -> list[str]:
    """Create batches with the hook in a running task: each gets the run tags."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        return [str(hook.create_batch("file-page")["id"]) for _ in range(int(context["dag_run"].conf.get("count", 2)))]
    finally:
        hook.close()


with DAG("page_run_with_batches", schedule=None, start_date=START, catchup=False, tags=["psopenai-test"]):
    submit()
