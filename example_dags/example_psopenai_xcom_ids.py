"""Hand batch IDs from one task to the cancel through XCom: a Jinja template, or an XComArg.

Three batches are submitted and each is cancelled a different way:

``cancel_by_template``
    ``batch_id="{{ ti.xcom_pull(task_ids='submit_a')['id'] }}"``: a Jinja template, rendered just
    before the task runs. ``batch_id`` (like ``batch``, ``thread_id``, ``run_id``, ``run``,
    ``conn_id``, ``api_base`` and ``organization``) is a template field. Template dependencies are
    not inferred: set ``submit_a >> cancel_by_template`` yourself.

``cancel_by_object``
    ``batch=submit_b`` (an XComArg: the task's return value). The operator reads the ``id`` of the
    batch object; Airflow adds the dependency by itself.

``cancel_by_key``
    ``batch_id=submit_c["id"]``. On an XComArg, ``["id"]`` selects the **XCom key** ``"id"``, not an
    item of the returned dict: it works only when the upstream task pushes each key of its result
    separately, which ``@task(multiple_outputs=True)`` does (Airflow also infers it from a
    ``-> dict[...]`` return annotation). Otherwise pass the whole object with ``batch=``, or use the
    template above.

A rendered ID is checked before anything is sent: ``None``, the text ``"None"`` (an ``xcom_pull``
that found nothing), an empty string or a list fail the task with a message naming the argument.

``render_template_as_native_obj`` is not needed: the operators also read a batch object that a
template rendered to text.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_psopenai.operators import StopBatchOperator

log = logging.getLogger(__name__)

DEFAULT_INPUT_FILE_ID = "file-psopenai-example-input"


def _submit(input_file_id: str, label: str) -> dict[str, Any]:
    from airflow_psopenai.hooks import PSOpenAIHook

    hook = PSOpenAIHook()
    try:
        batch = hook.create_batch(input_file_id=input_file_id, metadata={"example": label})
    finally:
        hook.close()
    log.info("Submitted batch %s.", batch["id"])
    return batch


@task(multiple_outputs=False)
def submit_batch(label: str, params: dict[str, Any]) -> dict[str, Any]:
    """Submit a batch; the whole object is the task's one XCom value."""
    return _submit(params["input_file_id"], label)


@task(multiple_outputs=True)
def submit_batch_fields(label: str, params: dict[str, Any]) -> dict[str, Any]:
    """Submit a batch; each key of the object is also pushed as its own XCom (id, status, ...).

    Fields without a value are left out: Airflow 3.0 cannot push an XCom whose value is None.
    """
    return {key: value for key, value in _submit(params["input_file_id"], label).items() if value is not None}


with DAG(
    "example_psopenai_xcom_ids",
    schedule=None,
    doc_md=__doc__,
    tags=["example", "psopenai"],
    params={
        "input_file_id": Param(
            DEFAULT_INPUT_FILE_ID,
            type="string",
            description="ID of an uploaded JSONL file (purpose=batch). The default works only with the emulator.",
        ),
    },
):
    submit_a = submit_batch.override(task_id="submit_a")("a")
    submit_b = submit_batch.override(task_id="submit_b")("b")
    submit_c = submit_batch_fields.override(task_id="submit_c")("c")

    cancel_by_template = StopBatchOperator(
        task_id="cancel_by_template",
        batch_id="{{ ti.xcom_pull(task_ids='submit_a')['id'] }}",
        pass_through=True,
    )
    submit_a >> cancel_by_template  # a template does not create the dependency

    StopBatchOperator(task_id="cancel_by_object", batch=submit_b, pass_through=True)

    StopBatchOperator(task_id="cancel_by_key", batch_id=submit_c["id"], pass_through=True)
