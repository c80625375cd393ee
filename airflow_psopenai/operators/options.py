"""The options of every operator that cancels, declared once: defaults, docstrings, template fields, checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_psopenai.cancelling.cancel import IfNotCancellable, check_cancel_options
from airflow_psopenai.cancelling.object_ids import rendered_at_run_time
from airflow_psopenai.client.validation import require_retry_count, require_timeout
from airflow_psopenai.resource_task import CONNECTION_TEMPLATE_FIELDS, DEFAULT_CONN_ID, ResourceTaskMixin

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import timedelta


class CancellingOperator(ResourceTaskMixin, BaseOperator):
    """What every cancelling operator takes besides what it cancels: how to cancel, wait and connect.

    :param wait: Wait after cancelling until the status is settled (cancelled, completed, failed, ...).
    :param force: Send the cancel whatever the status (no retrieve first); the API's "cannot cancel"
        answer then gives an error naming the real status.
    :param pass_through: Return the final object (the cancel's answer, or the settled object after
        ``wait``) so it goes to XCom; otherwise return nothing.
    :param if_not_cancellable: What to do when the object cannot be cancelled (already settled, or
        already cancelling): ``"fail"`` (PSOpenAI's behaviour, default), ``"succeed"`` (for cleanup
        and teardown tasks: nothing left to cancel; a ``wait`` still waits for a cancelling object) or
        ``"skip"``.
    :param poll_interval: Seconds between status polls while waiting (the first polls come sooner).
    :param wait_timeout: Longest wait, in seconds (above 0) or a timedelta; None waits until
        ``timeout_sec`` when that is above 0, else until the task's ``execution_timeout`` (also when
        deferred: Airflow does not apply it in the triggerer, so it becomes the trigger's deadline),
        or without limit when that is None too.
    :param deferrable: Wait in the triggerer, freeing the worker slot.
    :param conn_id: Connection of type ``psopenai`` (or the official ``openai`` type).
    :param api_base: Overrides the connection's API base.
    :param organization: Overrides the connection's organization.
    :param timeout_sec: Per-request limit in seconds; 0 means no overall limit.
    :param max_retry_count: Retries of a failed call (0 to 100); a wait's status polls always ride
        out transient errors.

    Options that no run can fix are refused when the task is built (the DAG is parsed), with the
    messages of a run; a subclass adds the template fields of what it cancels to these.
    """

    template_fields: Sequence[str] = CONNECTION_TEMPLATE_FIELDS
    ui_color = "#f6c6b7"
    # The options checked when the task is built (a mapped task's when .partial() is called), with defaults.
    checked_options: ClassVar[Mapping[str, object]] = {
        "if_not_cancellable": "fail",
        "poll_interval": 1.0,
        "wait_timeout": None,
        "timeout_sec": None,
        "max_retry_count": None,
    }

    def __init__(
        self,
        *,
        wait: bool = False,
        force: bool = False,
        pass_through: bool = False,
        if_not_cancellable: IfNotCancellable = "fail",
        poll_interval: float = 1.0,
        wait_timeout: float | timedelta | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        conn_id: str = DEFAULT_CONN_ID,
        api_base: str | None = None,
        organization: str | None = None,
        timeout_sec: float | None = None,
        max_retry_count: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._store_connection_args(conn_id, api_base, organization, timeout_sec, max_retry_count)
        self.wait = wait
        self.force = force
        self.pass_through = pass_through
        self.if_not_cancellable = if_not_cancellable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self.deferrable = deferrable

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Airflow's ``partial``, which also refuses the options given here that no run can fix, when the DAG is
        parsed, as an unmapped task's are (a template's or an XComArg's are checked when the task runs)."""
        given = {
            name: value
            for name, value in kwargs.items()
            if name in cls.checked_options and not rendered_at_run_time(value)
        }
        cls.check_option_values({**cls.checked_options, **given})
        return super().partial(**kwargs)

    @classmethod
    def check_option_values(cls, values: Mapping[str, object]) -> None:
        """Refuse bad options of the cancel, its wait and the connection (``checked_options``, by name)."""
        check_cancel_options(values["if_not_cancellable"], values["poll_interval"], values["wait_timeout"])
        if values["timeout_sec"] is not None:
            require_timeout(values["timeout_sec"])
        if values["max_retry_count"] is not None:
            require_retry_count(values["max_retry_count"])

    def _check_options(self) -> None:
        """Refuse bad options of the cancel, its wait and the connection, before any request."""
        self.check_option_values({name: getattr(self, name) for name in self.checked_options})
