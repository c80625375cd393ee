"""Operators that cancel an OpenAI object, optionally wait until it is settled, and pass it on.

The behaviour of PSOpenAI's ``Stop-Batch`` and ``Stop-ThreadRun``, written once over the resource
table; each public operator only names its arguments.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSkipException, BaseOperator, BaseOperatorLink

from airflow_psopenai.cancelling.cancel import Action, CancelPolicy, cancel_one
from airflow_psopenai.client.deadline import Deadline
from airflow_psopenai.exceptions import PSOpenAIError, PSOpenAIWaitTimeoutError
from airflow_psopenai.operators.options import CancellingOperator
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
    from airflow.providers.common.compat.sdk import Context, TaskInstanceKey

    from airflow_psopenai.hooks import PSOpenAIHook

CONSOLE_URL_XCOM_KEY = "openai_console_url"


class OpenAIConsoleLink(BaseOperatorLink):
    """Link to the object's page on platform.openai.com (only when the task used api.openai.com)."""

    name = "OpenAI"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """Return the URL the task pushed to XCom, or an empty string when there is none.

        Never raises: Airflow 3.0 computes links in the worker without guarding them, and a failing
        link would fail the task after its work was done.
        """
        from airflow.providers.common.compat.sdk import XCom

        try:
            url = XCom.get_value(key=CONSOLE_URL_XCOM_KEY, ti_key=ti_key)
        except Exception as error:  # a link must not change the task's outcome
            logging.getLogger(__name__).warning("Could not read the %s link's URL: %s", self.name, error)
            return ""
        return url if isinstance(url, str) else ""


class OpenAIBatchLink(OpenAIConsoleLink):
    """Link to the batch's page on platform.openai.com (only when the task used api.openai.com)."""

    name = "OpenAI Batch"


class OpenAIFineTuningJobLink(OpenAIConsoleLink):
    """Link to the fine-tuning job's page on platform.openai.com (only when the task used api.openai.com)."""

    name = "OpenAI Fine-tuning job"


class StopResourceOperator(CancellingOperator):
    """Cancel one object of ``resource``; the generic body of the public stop operators.

    Its options are described in :class:`~airflow_psopenai.operators.options.CancellingOperator`.
    """

    def execute(self, context: Context) -> dict[str, Any] | None:
        """Cancel the object, wait if asked, and return it if ``pass_through``."""
        # Pushed first: Airflow reads the link after every task, also one that fails on its input, and
        # logs a missing XCom as an error of its own after the task's.
        context["ti"].xcom_push(key=CONSOLE_URL_XCOM_KEY, value="")
        # Here, not at the top: a DAG file imports this module, and parsing needs none of the wait.
        from airflow_psopenai.waiting.polling import wait_limit

        self._check_options()
        ids = self.resolved_ids()
        hook = self.hook
        self._push_console_url(context, hook, ids)
        policy = CancelPolicy.for_task(context, force=self.force, if_not_cancellable=self.if_not_cancellable)
        obj = self._cancel(hook, ids, policy)
        if not self.wait or status_of(obj) in self.resource.settled:
            return self._finish(obj, ids)
        seconds, deadline_name = wait_limit(self.wait_timeout, hook.settings.timeout_sec, self.execution_timeout)
        deadline = Deadline.after(seconds)
        if self.deferrable:
            trigger = self.status_trigger(ids, self.poll_interval, deadline, context["ti"].try_number, deadline_name)
            self.defer(trigger=trigger, method_name="execute_complete")
        from airflow_psopenai.waiting.waits import run_in_worker, wait_until_settled

        event = run_in_worker(
            hook,
            lambda: wait_until_settled(
                hook,
                self.resource,
                ids,
                poll_interval=self.poll_interval,
                deadline=deadline,
                deadline_name=deadline_name,
                log=self.log,
            ),
        )
        return self._end_of_wait(event, ids)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Resume after the deferred wait: check the event, then finish as ``execute`` does."""
        if self.event_of_an_earlier_try(event, context):
            return self.execute(context)
        return self._end_of_wait(event, self.resolved_ids(), resumed=True)

    def _end_of_wait(self, event: object, ids: dict[str, str], *, resumed: bool = False) -> dict[str, Any] | None:
        """Finish after a wait, deferred or in the worker: the settled object, or the wait's error.

        :param resumed: The wait was deferred: the task's own log gets the outcome line that a wait in
            the worker logs itself.
        """
        from airflow_psopenai.waiting.events import EVENT_ERROR, EVENT_TIMEOUT, check_event, settled_after
        from airflow_psopenai.waiting.polling import log_status, outcome_of

        checked = check_event(event, self.resource, ids)
        if checked["status"] == EVENT_TIMEOUT:
            raise PSOpenAIWaitTimeoutError(checked["message"])
        if checked["status"] == EVENT_ERROR:
            raise PSOpenAIError(checked["message"])
        if resumed:
            obj = checked["object"]
            target = self.resource.describe(ids)
            log_status(self.log, target, status_of(obj), settled_after(checked), outcome_of(self.resource, obj))
        return self._finish(checked["object"], ids)

    def _cancel(self, hook: PSOpenAIHook, ids: dict[str, str], policy: CancelPolicy) -> dict[str, Any]:
        """Cancel the object by ``policy`` (:func:`~airflow_psopenai.cancelling.cancel.cancel_one`) and return it.

        :raises AirflowSkipException: When it cannot be cancelled and ``if_not_cancellable`` is ``"skip"``.
        """
        from airflow_psopenai.waiting.waits import run_in_worker

        result = run_in_worker(hook, lambda: cancel_one(hook, self.resource, ids, policy))
        if result.error is not None:
            raise result.error
        if result.action is Action.NOT_CANCELLABLE and policy.if_not_cancellable == "skip":
            raise AirflowSkipException(result.message)
        self.log.info("%s", result.message)
        assert result.obj is not None  # every outcome but a failure has the object
        return result.obj

    def _finish(self, obj: dict[str, Any], ids: dict[str, str]) -> dict[str, Any] | None:
        status = status_of(obj)
        if status in self.resource.settled and status != self.resource.cancelled_status:
            self.log.warning(
                "%s settled as %r, not cancelled: it ended before the cancel took effect.",
                self.resource.describe(ids),
                status,
            )
        return obj if self.pass_through else None

    def _push_console_url(self, context: Context, hook: PSOpenAIHook, ids: dict[str, str]) -> None:
        """Push the object's page for the extra link; empty when there is none (another API base)."""
        from airflow_psopenai.client.settings import DEFAULT_API_BASE

        page = self.resource.console_page(ids) if hook.settings.api_base == DEFAULT_API_BASE else None
        if page:
            context["ti"].xcom_push(key=CONSOLE_URL_XCOM_KEY, value=page)


class StopBatchOperator(StopResourceOperator):
    """Cancel an OpenAI Batch (PSOpenAI's ``Stop-Batch``), optionally wait, and pass it on.

    :param batch_id: The batch's ID (templated).
    :param batch: Instead of ``batch_id``: a batch object as returned by the API or another task (templated).

    Every other argument is described in :class:`~airflow_psopenai.operators.options.CancellingOperator`.
    """

    resource = BATCH
    template_fields = (*BATCH.id_fields, BATCH.object_arg, *CancellingOperator.template_fields)
    operator_extra_links = (OpenAIBatchLink(),)

    def __init__(
        self, *, batch_id: str | None = None, batch: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.batch_id = batch_id
        self.batch = batch
        self._check_when_built()


class StopThreadRunOperator(StopResourceOperator):
    """Cancel an Assistants thread run (PSOpenAI's ``Stop-ThreadRun``), optionally wait, and pass it on.

    OpenAI shut the Assistants API down on 2026-08-26: this works against servers that keep it.

    :param thread_id: The thread's ID (templated).
    :param run_id: The run's ID (templated).
    :param run: Instead of the IDs: a run object as returned by the API or another task (templated).

    Every other argument is described in :class:`~airflow_psopenai.operators.options.CancellingOperator`.
    """

    resource = THREAD_RUN
    template_fields = (*THREAD_RUN.id_fields, THREAD_RUN.object_arg, *CancellingOperator.template_fields)

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


class StopResponseOperator(StopResourceOperator):
    """Cancel a background Response (the Responses API, successor of thread runs), optionally wait, pass it on.

    Only responses created with ``background=true`` can be cancelled; they go straight to ``cancelled``.

    :param response_id: The response's ID (templated).
    :param response: Instead of ``response_id``: a response object as returned by the API or another task
        (templated).

    Every other argument is described in :class:`~airflow_psopenai.operators.options.CancellingOperator`.
    """

    resource = RESPONSE
    template_fields = (*RESPONSE.id_fields, RESPONSE.object_arg, *CancellingOperator.template_fields)

    def __init__(
        self, *, response_id: str | None = None, response: dict[str, Any] | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.response_id = response_id
        self.response = response
        self._check_when_built()


class StopFineTuningJobOperator(StopResourceOperator):
    """Cancel a fine-tuning job, optionally wait, and pass it on.

    The API has no ``cancelling`` status for jobs: a cancel answers ``cancelled`` at once, or the job
    had already ``succeeded`` or ``failed``. A cancelled job is billed for its ``trained_tokens``.

    :param fine_tuning_job_id: The job's ID (templated).
    :param fine_tuning_job: Instead of ``fine_tuning_job_id``: a job object as returned by the API or another
        task (templated).

    Every other argument is described in :class:`~airflow_psopenai.operators.options.CancellingOperator`.
    """

    resource = FINE_TUNING_JOB
    template_fields = (*FINE_TUNING_JOB.id_fields, FINE_TUNING_JOB.object_arg, *CancellingOperator.template_fields)
    operator_extra_links = (OpenAIFineTuningJobLink(),)

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


class StopEvalRunOperator(StopResourceOperator):
    """Cancel a run of an eval, optionally wait, and pass it on.

    The API cancels a run with a POST to the run itself and spells its status ``canceled``.

    :param eval_id: The eval's ID (templated).
    :param run_id: The run's ID (templated).
    :param eval_run: Instead of the IDs: an eval run object as returned by the API or another task (templated).

    Every other argument is described in :class:`~airflow_psopenai.operators.options.CancellingOperator`.
    """

    resource = EVAL_RUN
    template_fields = (*EVAL_RUN.id_fields, EVAL_RUN.object_arg, *CancellingOperator.template_fields)

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


class StopVectorStoreFileBatchOperator(StopResourceOperator):
    """Cancel a vector store's file batch, optionally wait, and pass it on.

    :param vector_store_id: The vector store's ID (templated).
    :param batch_id: The file batch's ID (templated).
    :param file_batch: Instead of the IDs: a file batch object as returned by the API or another task (templated).

    Every other argument is described in :class:`~airflow_psopenai.operators.options.CancellingOperator`.
    """

    resource = VECTOR_STORE_FILE_BATCH
    template_fields = (
        *VECTOR_STORE_FILE_BATCH.id_fields,
        VECTOR_STORE_FILE_BATCH.object_arg,
        *CancellingOperator.template_fields,
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
