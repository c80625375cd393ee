"""The sweep's decisions: which running batches of the account belong to a DAG run of this deployment, and
which of those to cancel once Airflow has said what state each run is in.

:class:`~airflow_psopenai.operators.StopOrphanedBatchesOperator` lists the batches (the listing walk), asks
Airflow for each run's state once, and cancels through :func:`~airflow_psopenai.cancelling.bulk.cancel_each`;
what it keeps is counted by reason. Pure logic: no HTTP, no Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_psopenai.exceptions import PSOpenAIConfigurationError
from airflow_psopenai.resources import BATCH, status_of
from airflow_psopenai.run_tags import DAG_ID_KEY, OTHER, RUN_ID_KEY, UNTAGGED, deployment_match

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

# Airflow's answer for a run it does not know (a run deleted, a DAG renamed).
MISSING_RUN = "missing"
# The run states a sweep may cancel for; a queued or running run's batches are never cancelled.
SWEEPABLE_RUN_STATES = frozenset({"failed", "success", MISSING_RUN})
DEFAULT_RUN_STATES = ("failed",)
# Why a batch was kept, as the XCom's "kept" counts it.
NOT_RUNNING = "not running"
OTHER_DEPLOYMENT = "another deployment"
NO_DEPLOYMENT_TAG = "no deployment tag"
NO_RUN_TAGS = "no run tags"
STATE_UNKNOWN = "state unknown"

RunKey = tuple[str, str]


def require_run_states(value: object) -> tuple[str, ...]:
    """Return ``run_states`` as a tuple, each a state a sweep may cancel for.

    :raises PSOpenAIConfigurationError: For an empty selection, a text instead of a list, or a state such as
        ``running`` or ``queued``, whose batches are still at work.
    """
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset) or not value:
        raise PSOpenAIConfigurationError(
            f"run_states must be a non-empty list of DAG run states, got {value!r:.100}: e.g. ('failed',) or "
            "('failed', 'success')."
        )
    wrong = [state for state in value if state not in SWEEPABLE_RUN_STATES]
    if wrong:
        raise PSOpenAIConfigurationError(
            f"run_states may hold {', '.join(sorted(SWEEPABLE_RUN_STATES))}, got {wrong!r}: the batches of a "
            "queued or running run are at work and never swept."
        )
    return tuple(value)


def count(kept: dict[str, int], reason: str, n: int = 1) -> None:
    """Add ``n`` batches kept for ``reason``."""
    kept[reason] = kept.get(reason, 0) + n


def runs_of_running_batches(
    batches: Iterable[Mapping[str, Any]], ours: str, kept: dict[str, int]
) -> dict[RunKey, list[str]]:
    """Return the running batches of deployment ``ours`` by DAG run (DAG ID, run ID), newest first; count the
    others in ``kept``: not running, another deployment's, without a deployment tag or without run tags."""
    runs: dict[RunKey, list[str]] = {}
    for item in batches:
        if status_of(item) not in BATCH.cancellable:
            count(kept, NOT_RUNNING)
            continue
        metadata = item.get("metadata")
        match = deployment_match(metadata, ours)
        if match == OTHER:
            count(kept, OTHER_DEPLOYMENT)
            continue
        if match == UNTAGGED:
            count(kept, NO_DEPLOYMENT_TAG)
            continue
        pairs = metadata if isinstance(metadata, dict) else {}
        dag_id, run_id = pairs.get(DAG_ID_KEY), pairs.get(RUN_ID_KEY)
        if not isinstance(dag_id, str) or not dag_id or not isinstance(run_id, str) or not run_id:
            count(kept, NO_RUN_TAGS)
            continue
        runs.setdefault((dag_id, run_id), []).append(str(item["id"]))
    return runs


def batches_to_cancel(
    runs: Mapping[RunKey, list[str]],
    states: Mapping[RunKey, str | None],
    run_states: Iterable[str],
    kept: dict[str, int],
) -> list[str]:
    """Return the batches of the runs whose state is one of ``run_states``; count the others in ``kept`` by
    their run's state (``run running``, ``run success``, ...; None: :data:`STATE_UNKNOWN`)."""
    wanted = set(run_states)
    chosen: list[str] = []
    for key, batch_ids in runs.items():
        state = states.get(key)
        if state is None:
            count(kept, STATE_UNKNOWN, len(batch_ids))
        elif state in wanted:
            chosen.extend(batch_ids)
        else:
            count(kept, f"run {state}", len(batch_ids))
    return chosen
