"""Airflow's audit log (the event log, Browse > Audit Log) for what the OpenAI page does."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser

CANCEL_BATCH_EVENT = "psopenai.cancel_batch"
CANCEL_RUN_EVENT = "psopenai.cancel_run_batches"


async def record(user: BaseUser, event: str, *, dag_id: str | None, run_id: str | None, extra: dict[str, Any]) -> None:
    """Write one entry, in a thread: who did ``event``, on what (``extra``: the batch, the outcome)."""
    await asyncio.to_thread(_write, user, event, dag_id, run_id, extra)


def _write(user: BaseUser, event: str, dag_id: str | None, run_id: str | None, extra: dict[str, Any]) -> None:
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    with create_session() as session:
        session.add(
            Log(
                event=event,
                owner=user.get_name(),
                owner_display_name=user.get_name(),
                extra=json.dumps(extra),
                dag_id=dag_id,
                run_id=run_id,
            )
        )
