"""Run tags: the metadata that ties a batch to the Airflow deployment, task and DAG run that launched it.

Two Airflow deployments (staging and production, say) may share an OpenAI account and run the same
DAG with the same run IDs: ``airflow_deployment`` (:func:`deployment`) tells their batches apart,
and every selection of a run's batches requires it to be this deployment's (or absent, for batches
tagged before it existed: :func:`deployment_match`).

``PSOpenAIHook.create_batch`` adds them by itself in a running task; :func:`run_tags` returns them for
batches created another way (the ``openai`` SDK, the official ``OpenAITriggerBatchOperator(metadata=...)``).
``StopBatchesOperator(metadata=...)`` and :func:`airflow_psopenai.callbacks.cancel_run_batches` find
the batches of a run by them. Standard library only: DAG files import it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_psopenai.exceptions import PSOpenAIConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping

DEPLOYMENT_KEY = "airflow_deployment"
DAG_ID_KEY = "airflow_dag_id"
RUN_ID_KEY = "airflow_run_id"
TASK_ID_KEY = "airflow_task_id"
MAP_INDEX_KEY = "airflow_map_index"
# A pair of its own on each create_batch call, so that a duplicate made by a retry on the way is found.
CREATE_NONCE_KEY = "airflow_create_nonce"
# The pairs this provider may add to a batch's metadata (the API allows 16): the rest are the user's.
PROVIDER_KEYS = (DEPLOYMENT_KEY, DAG_ID_KEY, RUN_ID_KEY, TASK_ID_KEY, MAP_INDEX_KEY, CREATE_NONCE_KEY)
# When neither [psopenai] deployment nor [api] base_url is set.
DEFAULT_DEPLOYMENT = "default"
# How a batch's deployment tag relates to this deployment (deployment_match).
OURS = "ours"
UNTAGGED = "untagged"
OTHER = "other"
# The API's limits on a batch's metadata.
MAX_PAIRS = 16
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 512


def deployment() -> str:
    """Return the name of this Airflow deployment, as its batches carry it in ``airflow_deployment``.

    ``[psopenai] deployment`` (``AIRFLOW__PSOPENAI__DEPLOYMENT``) when set; else ``[api] base_url``,
    which every component of a deployment shares and two deployments do not; else ``"default"``
    (:func:`deployment_is_default` says so). At most 512 characters (a metadata value's limit): a
    longer one is cut.
    """
    from airflow.providers.common.compat.sdk import conf

    for section, key in (("psopenai", "deployment"), ("api", "base_url")):
        value = str(conf.get(section, key, fallback="") or "").strip()
        if value:
            return value.rstrip("/")[:MAX_VALUE_LENGTH] if key == "base_url" else value[:MAX_VALUE_LENGTH]
    return DEFAULT_DEPLOYMENT


def deployment_is_default() -> bool:
    """Return whether neither ``[psopenai] deployment`` nor ``[api] base_url`` names this deployment."""
    return deployment() == DEFAULT_DEPLOYMENT


def deployment_match(metadata: object, ours: str) -> str:
    """Return how a batch's ``metadata`` relates to deployment ``ours``: ``"ours"``, ``"other"``, or
    ``"untagged"`` (no deployment tag: made before the tag existed, or tagged by hand)."""
    pairs = metadata if isinstance(metadata, dict) else {}
    tag = pairs.get(DEPLOYMENT_KEY)
    if tag is None:
        return UNTAGGED
    return OURS if tag == ours else OTHER


def run_tags(context: Mapping[str, Any]) -> dict[str, str]:
    """Return the run tags of the task whose ``context`` this is: the deployment, DAG, run and task IDs
    (``airflow_map_index`` only when mapped).

    Use it as ``metadata=run_tags(context)`` (or merged with your own keys) when a batch is created
    without this provider's hook.
    """
    ti = context["ti"]
    tags = {
        DEPLOYMENT_KEY: deployment(),
        DAG_ID_KEY: str(ti.dag_id),
        RUN_ID_KEY: str(ti.run_id),
        TASK_ID_KEY: str(ti.task_id),
    }
    map_index = getattr(ti, "map_index", -1)
    if map_index is not None and map_index >= 0:
        tags[MAP_INDEX_KEY] = str(map_index)
    return tags


def run_selector(dag_id: str, run_id: str) -> dict[str, str]:
    """Return the metadata that every batch of one DAG run holds (whatever task created it), deployment
    aside: a selection by it keeps the batches whose :func:`deployment_match` is not ``"other"``."""
    return {DAG_ID_KEY: dag_id, RUN_ID_KEY: run_id}


def is_run_selector(metadata: Mapping[str, str]) -> bool:
    """Return whether ``metadata`` selects the batches of a DAG run (it holds a DAG ID and a run ID)."""
    return DAG_ID_KEY in metadata and RUN_ID_KEY in metadata


def tagged_metadata(tags: Mapping[str, str], own: Mapping[str, object] | None) -> dict[str, str]:
    """Return ``own`` metadata with the run tags added (``own`` keys win), checked against the API's limits.

    :raises PSOpenAIConfigurationError: Before any request, naming the key or the count over the limit.
    """
    merged: dict[str, str] = dict(tags)
    for key, value in (own or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise PSOpenAIConfigurationError(f"Batch metadata holds text keys and values only, got {key!r}: {value!r}.")
        merged[key] = value
    check_metadata(merged)
    return merged


def check_metadata(metadata: Mapping[str, str]) -> None:
    """Refuse metadata the API would refuse: more than 16 pairs, keys over 64 or values over 512 characters."""
    if len(metadata) > MAX_PAIRS:
        raise PSOpenAIConfigurationError(
            f"A batch's metadata holds at most {MAX_PAIRS} pairs; with the run tags ({', '.join(metadata)}) "
            f"it would hold {len(metadata)}. Drop some of your own keys."
        )
    for key, value in metadata.items():
        if len(key) > MAX_KEY_LENGTH:
            raise PSOpenAIConfigurationError(
                f"Batch metadata key {key[:80]!r} is {len(key)} characters long; the API allows {MAX_KEY_LENGTH}."
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise PSOpenAIConfigurationError(
                f"The value of batch metadata key {key!r} is {len(value)} characters long; "
                f"the API allows {MAX_VALUE_LENGTH}."
            )


class RunLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose every line begins with the DAG run it works for: ``[dag_id=... run_id=...]``.

    For code that runs outside the run's tasks (a deadline's callback in the triggerer, whose own log
    context names no run): a search of the logs for the run finds its lines.

    :param logger: The logger to write to.
    :param dag_id: The run's DAG ID.
    :param run_id: The run's ID.
    """

    def __init__(self, logger: logging.Logger, dag_id: str, run_id: str) -> None:
        super().__init__(logger, {"dag_id": dag_id, "run_id": run_id})
        self.prefix = f"[dag_id={dag_id} run_id={run_id}]"

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """Put the run before the message."""
        return f"{self.prefix} {msg}", kwargs
