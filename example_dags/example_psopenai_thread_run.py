"""Cancel an Assistants thread run (PSOpenAI's ``Stop-ThreadRun``), wait, and confirm it.

.. warning::
   OpenAI shut the Assistants API (threads and runs) down on 2026-08-26, and Azure OpenAI retired
   its Assistants API the same day: api.openai.com answers thread-run calls with 404, which this
   provider reports with a note on the shutdown. Cancelling runs still matters on servers that
   keep the Assistants API (self-hosted, OpenAI-compatible gateways) and on the bundled emulator.
   The successor is the Responses API with ``background=true`` (cancelled with
   ``POST /responses/{id}/cancel``): use :class:`StopResponseOperator` and
   :class:`ResponseCancelledSensor` from this provider for those, the same way.

The tasks:

``start_run``
    Gets the run to cancel. With the params ``thread_id`` and ``run_id`` it retrieves that run
    (on an Assistants-compatible server, you would take the IDs from your own task that created
    the run). Without them it asks the emulator to create one, through its admin endpoint
    ``POST {base_url}/_emulator/thread_runs``, where ``base_url`` is the connection's API base
    without ``/v1``. That endpoint exists only on the emulator: against any other server, give the
    IDs.
``cancel_run``
    :class:`StopThreadRunOperator` with ``run=`` the run object (``thread_id=`` and ``run_id=``
    work too), ``wait=True`` in the triggerer (``deferrable=True``) and ``pass_through=True``.
    Every call carries the ``OpenAI-Beta: assistants=v2`` header the API requires.
``confirm_cancelled``
    :class:`ThreadRunCancelledSensor`. ``soft_fail=True``: when the run finished (completed,
    failed, expired, incomplete) before the cancel took effect, the sensor is skipped rather than
    failed, and so is the report.
``report_run``
    Logs the cancelled run's status and token usage.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.operators import StopThreadRunOperator
from airflow_psopenai.sensors import ThreadRunCancelledSensor

log = logging.getLogger(__name__)


@task(multiple_outputs=False)
def start_run(params: dict[str, Any]) -> dict[str, Any]:
    """Return the run to cancel: the one named by the params, or a new one on the emulator."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        if params.get("thread_id") and params.get("run_id"):
            return hook.get_thread_run(params["thread_id"], params["run_id"])
        base_url = hook.settings.api_base.removesuffix("/v1")
    finally:
        hook.close()
    request = urllib.request.Request(
        f"{base_url}/_emulator/thread_runs",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            run: dict[str, Any] = json.load(response)
    except (urllib.error.URLError, ValueError) as error:
        raise RuntimeError(
            f"Could not create a run through {base_url}/_emulator/thread_runs ({error}): that endpoint exists only "
            "on the airflow-psopenai emulator. Against another server, trigger the DAG with "
            '{"thread_id": "thread_...", "run_id": "run_..."}.'
        ) from error
    log.info("The emulator started run %s in thread %s.", run["id"], run["thread_id"])
    return run


@task(multiple_outputs=False)
def report_run(run: dict[str, Any]) -> dict[str, Any]:
    """Log the cancelled run's status and token usage."""
    log.info("Run %s of thread %s is %s; usage: %s.", run["id"], run["thread_id"], run["status"], run.get("usage"))
    return {"run_id": run["id"], "thread_id": run["thread_id"], "status": run["status"], "usage": run.get("usage")}


with DAG(
    "example_psopenai_thread_run",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai", "assistants"],
    params={
        "thread_id": Param(None, type=["null", "string"], description="Thread of the run to cancel (empty: emulator)."),
        "run_id": Param(None, type=["null", "string"], description="Run to cancel (empty: the emulator creates one)."),
    },
):
    run = start_run()

    cancel_run = StopThreadRunOperator(
        task_id="cancel_run",
        run=run,
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=1.0,
        max_retry_count=3,
        retries=2,  # a retry takes the run it finds cancelling as its own cancel and waits for it
        retry_delay=timedelta(seconds=10),
    )

    confirm_cancelled = ThreadRunCancelledSensor(
        task_id="confirm_cancelled",
        run=cancel_run.output,
        soft_fail=True,
        poke_interval=5,
        timeout=10 * 60,
        retries=2,
        retry_delay=timedelta(seconds=10),
    )

    report_run(confirm_cancelled.output)
