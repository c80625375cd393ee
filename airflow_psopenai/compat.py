"""What differs between the Airflow 3 lines and apache-airflow-providers-common-compat does not cover.

Everything else that moved between 3.0 and 3.3 is imported from
``airflow.providers.common.compat.sdk`` where it is used.
"""

from __future__ import annotations

from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_2_PLUS, AIRFLOW_V_3_3_PLUS

if AIRFLOW_V_3_2_PLUS:
    from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout
else:  # importing them from airflow.exceptions is deprecated from 3.2 on
    from airflow.exceptions import TaskDeferralError, TaskDeferralTimeout  # type: ignore[no-redef]

__all__ = ["TaskDeferralError", "TaskDeferralTimeout", "amask_secret"]


async def amask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's secrets masker without blocking the event loop.

    Airflow 3.3 has an asynchronous call for it; before, the synchronous one talks to the supervisor
    and runs in a thread here (on the event loop of a 3.0 triggerer it would raise).
    """
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as mask

        await mask(secret)
        return
    from airflow.providers.common.compat.sdk import mask_secret
    from asgiref.sync import sync_to_async

    await sync_to_async(mask_secret, thread_sensitive=False)(secret)
