"""Sensors that wait until an OpenAI object is cancelled, and hand it to XCom.

Downstream tasks read ``request_counts`` and ``output_file_id`` of the cancelled batch to recover
partial results.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseOperator,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.exceptions import PSOpenAIError, PSOpenAIUnexpectedStatusError
from airflow_psopenai.resource_task import CONNECTION_TEMPLATE_FIELDS, DEFAULT_CONN_ID, ResourceTaskMixin
from airflow_psopenai.resources import (
    BATCH,
    EVAL_RUN,
    FINE_TUNING_JOB,
    RESPONSE,
    THREAD_RUN,
    VECTOR_STORE_FILE_BATCH,
    status_of,
)

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


class ResourceCancelledSensor(ResourceTaskMixin, BaseSensorOperator):
    """Wait until one object of ``resource`` is ``cancelled``; the generic body of the public sensors.

    ``cancelling`` or still running: keep waiting. Any other settled status (completed, failed,
    expired, incomplete) can never become ``cancelled``: fail at once (skip with ``soft_fail``).
    A transient error of a poke (429 that is not quota, 5xx, transport errors) counts as "not yet";
    a permanent one (401, 404, quota) fails the task with its message, under ``soft_fail`` too and
    in every mode (``never_fail`` skips it).

    :param deferrable: Poke once, then wait in the triggerer (polling every ``poke_interval``,
        until the sensor's ``timeout``).
    :param conn_id: Connection of type ``psopenai`` (or the official ``openai`` type).
    :param api_base: Overrides the connection's API base.
    :param organization: Overrides the connection's organization.
    :param timeout_sec: Per-request limit in seconds; 0 means no overall limit.
    :param max_retry_count: Retries of one call (0 to 100).
    """

    ui_color = "#f6e3b7"

    def __init__(
        self,
        *,
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
        self.deferrable = deferrable
        self._deadline = NO_DEADLINE  # set when execute starts: the sensor's timeout bounds every poke
        self._wait_started: float | None = None  # when the wait began (epoch seconds), for the outcome line

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Retrieve the object once and say whether it is cancelled.

        The call, and its retries, end by the sensor's timeout: a poke that meets it without a
        ``cancelled`` object ends the sensor with ``AirflowSensorTimeout`` there and then.
        """
        from airflow_psopenai.client.retry import is_retryable
        from airflow_psopenai.waiting.polling import log_status, outcome_of, timeout_message

        ids = self.resolved_ids()
        target = self.resource.describe(ids)
        deadline = self._deadline
        try:
            obj = self.hook.get_object(self.resource, ids, deadline=deadline)
        except PSOpenAIError as error:
            if not is_retryable(error):
                raise
            if deadline.passed():
                raise AirflowSensorTimeout(f"{timeout_message(target, self._deadline_name, None)} {error}") from None
            self.log.warning("Poke of %s failed for now, trying at the next poke: %s", target, error)
            return False
        status = status_of(obj)
        if status == self.resource.cancelled_status:
            after = None if self._wait_started is None else max(0.0, time.time() - self._wait_started)
            # the outcome line a deferred wait logs
            log_status(self.log, target, status, after, outcome_of(self.resource, obj))
            return PokeReturnValue(is_done=True, xcom_value=obj)
        if status in self.resource.settled:
            raise self._unexpected(obj, ids)
        if deadline.passed():
            raise AirflowSensorTimeout(timeout_message(target, self._deadline_name, status))
        self.log.info("%s is %s; waiting for cancelled.", target, status)
        return False

    @property
    def _deadline_name(self) -> str:
        """How a timeout's message names the sensor's deadline, poked or deferred alike."""
        return f"the sensor's timeout of {float(self.timeout):g} s"

    def execute(self, context: Context) -> Any:
        """Poke (in the worker, or once and then in the triggerer when ``deferrable``) until ``timeout``."""
        if self.deferrable:
            self._wait_started = time.time()
            self._deadline = Deadline.after(float(self.timeout))
            done = self._first_poke(context)
            if isinstance(done, PokeReturnValue) and done.is_done:
                return done.xcom_value
            self.defer(
                trigger=self.status_trigger(
                    self.resolved_ids(),
                    float(self.poke_interval),
                    self._deadline,
                    context["ti"].try_number,
                    self._deadline_name,
                ),
                method_name="execute_complete",
                timeout=timedelta(seconds=float(self.timeout)),
            )
        # Where Airflow's own sensor loop starts counting: the first reschedule of this try, or now.
        started = context["ti"].get_first_reschedule_date(context) if self.reschedule else None
        if isinstance(started, str):  # what Airflow 3.0's dag.test() hands over (not validated into a datetime)
            started = datetime.fromisoformat(started)
        self._wait_started = started.timestamp() if started else time.time()
        self._deadline = Deadline(self._wait_started + float(self.timeout))
        return super().execute(context)

    def _first_poke(self, context: Context) -> bool | PokeReturnValue:
        """Poke once before deferring, with the meaning Airflow gives ``soft_fail``, ``never_fail`` and
        ``silent_fail`` in poke mode."""
        try:
            return self.poke(context)
        except (AirflowFailException, AirflowSensorTimeout) as error:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(
                    f"Skipping ({'soft_fail' if self.soft_fail else 'never_fail'}): {error}"
                ) from error
            raise
        except AirflowSkipException:
            raise
        except Exception as error:
            if self.silent_fail:
                self.log.error("Sensor poke failed, waiting in the triggerer all the same (silent_fail): %s", error)
                return False
            if self.never_fail:
                raise AirflowSkipException(f"Skipping (never_fail): {error}") from error
            raise

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the trigger, with the meaning ``soft_fail`` and ``never_fail`` have in poke mode.

        Written here rather than inherited: the base sensor's differs between Airflow lines (3.0 lets
        a trigger timeout escape ``soft_fail`` and ignores ``never_fail``), and every Airflow line
        skips any error of a resumed sensor under ``soft_fail``, which would hide a wrong key or ID.
        A permanent API error fails under ``soft_fail`` too, as a poke's does.
        """
        from airflow_psopenai.compat import TaskDeferralError, TaskDeferralTimeout

        try:
            try:
                return BaseOperator.resume_execution(self, next_method, next_kwargs, context)
            except TaskDeferralTimeout as error:
                raise AirflowSensorTimeout(*error.args) from error
        except (AirflowException, TaskDeferralError) as error:
            permanent = isinstance(error, PSOpenAIError) and not isinstance(error, AirflowFailException)
            if self.never_fail or (self.soft_fail and not permanent):
                mode = "never_fail" if self.never_fail else "soft_fail"
                raise AirflowSkipException(f"Skipping ({mode}): {error}") from error
            raise

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: the cancelled object goes to XCom; anything else fails (or skips)."""
        if self.event_of_an_earlier_try(event, context):
            return self.execute(context)  # type: ignore[no-any-return]
        # Here, not at the top: a DAG file imports this module, and parsing needs none of the wait's code.
        from airflow_psopenai.waiting.events import EVENT_ERROR, EVENT_TIMEOUT, check_event, settled_after
        from airflow_psopenai.waiting.polling import log_status, outcome_of

        ids = self.resolved_ids()
        checked = check_event(event, self.resource, ids)
        if checked["status"] == EVENT_TIMEOUT:
            raise AirflowSensorTimeout(checked["message"])
        if checked["status"] == EVENT_ERROR:
            raise PSOpenAIError(checked["message"])
        obj: dict[str, Any] = checked["object"]
        log_status(
            self.log,
            self.resource.describe(ids),
            status_of(obj),
            settled_after(checked),
            outcome_of(self.resource, obj),
        )
        if status_of(obj) != self.resource.cancelled_status:
            raise self._unexpected(obj, ids)
        return obj

    def _unexpected(self, obj: dict[str, Any], ids: dict[str, str]) -> PSOpenAIUnexpectedStatusError:
        status = status_of(obj)
        return PSOpenAIUnexpectedStatusError(
            f"{self.resource.describe(ids)} settled as {status!r}, so it will never be cancelled.",
            status=status,
            obj=obj,
        )


class BatchCancelledSensor(ResourceCancelledSensor):
    """Wait until an OpenAI Batch is ``cancelled``; the batch goes to XCom.

    :param batch_id: The batch's ID (templated).
    :param batch: Instead of ``batch_id``: a batch object as returned by the API or another task (templated).
    """

    resource = BATCH
    template_fields = (*BATCH.id_fields, BATCH.object_arg, *CONNECTION_TEMPLATE_FIELDS)

    def __init__(
        self, *, batch_id: str | None = None, batch: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.batch = batch
        self._check_when_built()


class ThreadRunCancelledSensor(ResourceCancelledSensor):
    """Wait until an Assistants thread run is ``cancelled``; the run goes to XCom.

    :param thread_id: The thread's ID (templated).
    :param run_id: The run's ID (templated).
    :param run: Instead of the IDs: a run object as returned by the API or another task (templated).
    """

    resource = THREAD_RUN
    template_fields = (*THREAD_RUN.id_fields, THREAD_RUN.object_arg, *CONNECTION_TEMPLATE_FIELDS)

    def __init__(
        self,
        *,
        thread_id: str | None = None,
        run_id: str | None = None,
        run: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.thread_id = thread_id
        self.run_id = run_id
        self.run = run
        self._check_when_built()


class ResponseCancelledSensor(ResourceCancelledSensor):
    """Wait until a background Response is ``cancelled``; the response goes to XCom.

    :param response_id: The response's ID (templated).
    :param response: Instead of ``response_id``: a response object as returned by the API or another task
        (templated).
    """

    resource = RESPONSE
    template_fields = (*RESPONSE.id_fields, RESPONSE.object_arg, *CONNECTION_TEMPLATE_FIELDS)

    def __init__(
        self, *, response_id: str | None = None, response: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.response_id = response_id
        self.response = response
        self._check_when_built()


class FineTuningJobCancelledSensor(ResourceCancelledSensor):
    """Wait until a fine-tuning job is ``cancelled``; the job goes to XCom.

    :param fine_tuning_job_id: The job's ID (templated).
    :param fine_tuning_job: Instead of ``fine_tuning_job_id``: a job object as returned by the API or another
        task (templated).
    """

    resource = FINE_TUNING_JOB
    template_fields = (*FINE_TUNING_JOB.id_fields, FINE_TUNING_JOB.object_arg, *CONNECTION_TEMPLATE_FIELDS)

    def __init__(
        self,
        *,
        fine_tuning_job_id: str | None = None,
        fine_tuning_job: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.fine_tuning_job_id = fine_tuning_job_id
        self.fine_tuning_job = fine_tuning_job
        self._check_when_built()


class EvalRunCancelledSensor(ResourceCancelledSensor):
    """Wait until a run of an eval is ``canceled`` (the API's spelling); the run goes to XCom.

    :param eval_id: The eval's ID (templated).
    :param run_id: The run's ID (templated).
    :param eval_run: Instead of the IDs: an eval run object as returned by the API or another task (templated).
    """

    resource = EVAL_RUN
    template_fields = (*EVAL_RUN.id_fields, EVAL_RUN.object_arg, *CONNECTION_TEMPLATE_FIELDS)

    def __init__(
        self,
        *,
        eval_id: str | None = None,
        run_id: str | None = None,
        eval_run: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.eval_id = eval_id
        self.run_id = run_id
        self.eval_run = eval_run
        self._check_when_built()


class VectorStoreFileBatchCancelledSensor(ResourceCancelledSensor):
    """Wait until a vector store's file batch is ``cancelled``; the file batch goes to XCom.

    :param vector_store_id: The vector store's ID (templated).
    :param batch_id: The file batch's ID (templated).
    :param file_batch: Instead of the IDs: a file batch object as returned by the API or another task (templated).
    """

    resource = VECTOR_STORE_FILE_BATCH
    template_fields = (
        *VECTOR_STORE_FILE_BATCH.id_fields,
        VECTOR_STORE_FILE_BATCH.object_arg,
        *CONNECTION_TEMPLATE_FIELDS,
    )

    def __init__(
        self,
        *,
        vector_store_id: str | None = None,
        batch_id: str | None = None,
        file_batch: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vector_store_id = vector_store_id
        self.batch_id = batch_id
        self.file_batch = file_batch
        self._check_when_built()
