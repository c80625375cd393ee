"""Cancel a background Response (the Responses API, successor of thread runs), and confirm it.

A Response created with ``background=true`` runs on OpenAI's side after the request returned, and
bills for the tokens it generates until it ends: cancel it when nobody wants the answer any more.
It has no ``cancelling`` state: a cancel turns it ``cancelled`` at once, unless it already
``completed``, ``failed`` or went ``incomplete``. Only background responses can be cancelled; the
API answers any other one with 404, which this provider explains.

The tasks:

``start_response``
    Gets the response to cancel. With the param ``response_id`` it retrieves that response (take
    the ID from your own task that created it with ``client.responses.create(..., background=True)``).
    Without it, it asks the emulator to create one, through its admin endpoint
    ``POST {base_url}/_emulator/responses``, where ``base_url`` is the connection's API base without
    ``/v1``. That endpoint exists only on the emulator: against the real API, give the ID.
``cancel_response``
    :class:`StopResponseOperator` with ``response=`` the response object (``response_id=`` works
    too), ``wait=True`` in the triggerer (``deferrable=True``) and ``pass_through=True``.
``confirm_cancelled``
    :class:`ResponseCancelledSensor`. ``soft_fail=True``: a response that completed before the cancel
    skips the check and the report instead of failing them.
``report_response``
    Logs the cancelled response's status and token usage.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.operators import StopResponseOperator
from airflow_psopenai.sensors import ResponseCancelledSensor

log = logging.getLogger(__name__)


@task(multiple_outputs=False)
def start_response(params: dict[str, Any]) -> dict[str, Any]:
    """Return the response to cancel: the one named by the params, or a new background one on the emulator."""
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        if params.get("response_id"):
            return hook.get_response(params["response_id"])
        base_url = hook.settings.api_base.removesuffix("/v1")
    finally:
        hook.close()
    request = urllib.request.Request(
        f"{base_url}/_emulator/responses",
        data=json.dumps({"status": "in_progress", "background": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            response: dict[str, Any] = json.load(answer)
    except (urllib.error.URLError, ValueError) as error:
        raise RuntimeError(
            f"Could not create a response through {base_url}/_emulator/responses ({error}): that endpoint exists "
            'only on the airflow-psopenai emulator. Against the real API, trigger the DAG with {"response_id": '
            '"resp_..."} of a response created with background=true.'
        ) from error
    log.info("The emulator started background response %s.", response["id"])
    return response


@task(multiple_outputs=False)
def report_response(response: dict[str, Any]) -> dict[str, Any]:
    """Log the cancelled response's status and token usage."""
    log.info("Response %s is %s; usage: %s.", response["id"], response["status"], response.get("usage"))
    return {"response_id": response["id"], "status": response["status"], "usage": response.get("usage")}


with DAG(
    "example_psopenai_response",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai", "responses"],
    params={
        "response_id": Param(
            None, type=["null", "string"], description="Background response to cancel (empty: the emulator makes one)."
        ),
    },
):
    response = start_response()

    cancel_response = StopResponseOperator(
        task_id="cancel_response",
        response=response,
        wait=True,
        deferrable=True,
        pass_through=True,
        poll_interval=1.0,
        max_retry_count=3,
        retries=2,  # a retry takes the response it finds cancelled as its own cancel
        retry_delay=timedelta(seconds=10),
    )

    confirm_cancelled = ResponseCancelledSensor(
        task_id="confirm_cancelled",
        response=cancel_response.output,
        soft_fail=True,
        poke_interval=5,
        timeout=10 * 60,
    )

    report_response(confirm_cancelled.output)
