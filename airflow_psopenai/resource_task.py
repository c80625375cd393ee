"""What the operators and the sensors share: connection arguments, IDs, the hook, the trigger.

Imports stay light (no httpx, no tenacity): this module is loaded at DAG-parse time; the hook and
the trigger are imported when a task runs.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_psopenai.cancelling.object_ids import check_literal_ids, ids_from_arguments
from airflow_psopenai.client.validation import require_retry_count, require_timeout

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_psopenai.client.deadline import Deadline
    from airflow_psopenai.hooks import PSOpenAIHook
    from airflow_psopenai.resources import CancellableResource
    from airflow_psopenai.triggers.status import ResourceStatusTrigger

DEFAULT_CONN_ID = "psopenai_default"
CONNECTION_TEMPLATE_FIELDS = ("conn_id", "api_base", "organization")


class ResourceTaskMixin:
    """Connection handling and ID resolution for a task that acts on one cancellable resource.

    Subclasses set ``resource`` (a :class:`~airflow_psopenai.resources.CancellableResource`) and store the
    ID arguments and the object argument as attributes named after ``resource.id_fields`` and
    ``resource.object_arg`` (so they can be template fields).
    """

    resource: ClassVar[CancellableResource]

    conn_id: str
    api_base: str | None
    organization: str | None
    timeout_sec: float | None
    max_retry_count: int | None

    def _store_connection_args(
        self,
        conn_id: str,
        api_base: str | None,
        organization: str | None,
        timeout_sec: float | None,
        max_retry_count: int | None,
    ) -> None:
        # Only stored here: a subclass checks them once its own arguments are set.
        self.conn_id = conn_id
        self.api_base = api_base
        self.organization = organization
        self.timeout_sec = timeout_sec
        self.max_retry_count = max_retry_count

    def hook_kwargs(self) -> dict[str, Any]:
        """Return the hook's per-call overrides, checked (JSON-plain: they also go to the trigger)."""
        kwargs: dict[str, Any] = {}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.organization:
            kwargs["organization"] = self.organization
        if self.timeout_sec is not None:
            kwargs["timeout_sec"] = require_timeout(self.timeout_sec)
        if self.max_retry_count is not None:
            kwargs["max_retry_count"] = require_retry_count(self.max_retry_count)
        return kwargs

    def _check_when_built(self) -> None:
        """Refuse at DAG-parse time the options and IDs no run can fix, with the messages of a run.

        Called at the end of the public classes' ``__init__``; values that a template or an XComArg
        gives are checked when the task runs.
        """
        if self._instance_of_a_mapped_task():
            return
        self._check_options()
        self.hook_kwargs()
        given = {name: getattr(self, name) for name in self.resource.id_fields}
        check_literal_ids(self.resource, given, getattr(self, self.resource.object_arg))

    def _check_options(self) -> None:
        """Refuse bad options other than the connection's and the IDs (none here; the operators have some)."""

    def _instance_of_a_mapped_task(self) -> bool:
        """Return whether Airflow built this task from a mapped one, as the task runs (``.partial().expand()``).

        Its values are then checked in ``execute``, as a run's, after the task's first XCom push
        (Airflow reads the console link's XCom after every task, also one that failed on its input).
        """
        return bool(getattr(self, "_BaseOperator__from_mapped", False))

    @cached_property
    def hook(self) -> PSOpenAIHook:
        """Return the hook, created on first use (in the worker, never at DAG-parse time)."""
        from airflow_psopenai.hooks import PSOpenAIHook

        return PSOpenAIHook(self.conn_id, **self.hook_kwargs())

    def resolved_ids(self) -> dict[str, str]:
        """Return the rendered IDs, checked, taken from the ID arguments or from the object argument."""
        given = {name: getattr(self, name) for name in self.resource.id_fields}
        return ids_from_arguments(self.resource, given, getattr(self, self.resource.object_arg))

    def status_trigger(
        self,
        ids: dict[str, str],
        poll_interval: float,
        deadline: Deadline,
        try_number: int | None,
        deadline_name: str | None = None,
    ) -> ResourceStatusTrigger:
        """Return the trigger that waits in the triggerer until the object is settled or ``deadline`` passes.

        :param deadline_name: How the timeout's message names the deadline (None: it has no name).
        """
        from airflow_psopenai.triggers.status import ResourceStatusTrigger
        from airflow_psopenai.waiting.polling import UNNAMED_DEADLINE

        return ResourceStatusTrigger(
            resource=self.resource.name,
            ids=ids,
            conn_id=self.conn_id,
            hook_kwargs=self.hook_kwargs(),
            poll_interval=poll_interval,
            # Absolute, so a triggerer restart does not restart the clock.
            deadline=deadline.at,
            try_number=try_number,
            wait_started=time.time(),
            deadline_name=deadline_name or UNNAMED_DEADLINE,
        )

    def event_of_an_earlier_try(self, event: object, context: Context) -> bool:
        """Return whether a resumed task got the trigger event of one of its earlier tries.

        Airflow 3.0 does not clear a failed deferred task's next method when it is up for retry, so
        the retry resumes with the old event instead of running ``execute``: it must start over.
        """
        sent_for = event.get("try_number") if isinstance(event, dict) else None
        if sent_for is None or sent_for == context["ti"].try_number:
            return False
        self.log.info(  # type: ignore[attr-defined]  # the operators' and sensors' logger
            "Resumed with the wait's event of try %s, not this try's (%s): starting this try over.",
            sent_for,
            context["ti"].try_number,
        )
        return True
