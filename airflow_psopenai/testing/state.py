"""All objects of one emulator and the rules of their cancels, thread-safe.

Time only moves through the injectable clock, and transitions are worked out lazily whenever an
object is read, so a test with a :class:`ManualClock` needs no sleeps. Statuses and which of them
can be cancelled come from :mod:`airflow_psopenai.resources`.

Objects stay in the status they were created in until they are cancelled (``race_to`` says how a
cancel ends instead), unless a batch has a ``BatchSchedule``
(its own, or the state's ``batch_schedule`` when it was created): then it progresses, completes and
expires on that schedule. :meth:`EmulatorState.fail_batch` fails a batch on demand.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping

from airflow_psopenai.resources import (
    BATCH,
    CANCELLED,
    EVAL_RUN,
    FINE_TUNING_JOB,
    RESPONSE,
    THREAD_RUN,
    VECTOR_STORE_FILE_BATCH,
    CancellableResource,
)
from airflow_psopenai.testing.kinds import (
    EVAL_ITEMS_PER_SECOND,
    FILES_PER_SECOND,
    TRAINED_TOKENS_PER_SECOND,
    TRAINING_TOKENS,
    EvalRunObject,
    FileBatchObject,
    FineTuningJobObject,
    WorkingObject,
    cannot_cancel_message,
    check_kind_status,
    metadata_matches,
)
from airflow_psopenai.testing.objects import (
    BATCH_TIMES_AT_CREATION,
    CANCELLING,
    BatchObject,
    BatchSchedule,
    ResponseObject,
    RunObject,
    TrackedObject,
    new_id,
)

Clock = Callable[[], float]


class ApiError(Exception):
    """An error the API answers, e.g. an unknown ID (404) or a cancel in the wrong status (409, 400).

    Plain data: the HTTP layer turns it into an answer (``messages.api_error_reply``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        """Keep the parts of the error body."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code


class ManualClock:
    """A clock that moves only when told to, for tests; pass it as ``clock``."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        """Start at ``start`` epoch seconds."""
        self._now = start

    def __call__(self) -> float:
        """Return the current time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        if seconds < 0:
            raise ValueError("A clock does not go back.")
        self._now += seconds


def _check_status(resource: CancellableResource, status: str, race_to: str | None) -> None:
    if status not in resource.statuses:
        raise ValueError(f"Unknown {resource.label} status {status!r}; expected one of {sorted(resource.statuses)}.")
    ends = resource.settled - {CANCELLED}
    if race_to is not None and race_to not in ends:
        raise ValueError(f"race_to must be one of {sorted(ends)} or None, not {race_to!r}.")


class EmulatorState:
    """Every batch, thread run and response of one emulator; thread-safe.

    :param clock: Returns epoch seconds; a :class:`ManualClock` makes tests independent of real time.
    :param cancel_delay: Seconds an object stays ``cancelling`` before it settles.
    """

    def __init__(self, clock: Clock = time.time, cancel_delay: float = 0.2) -> None:
        """Start with no objects."""
        self.clock = clock
        self.cancel_delay = cancel_delay
        #: The schedule of the batches created from now on without one of their own (None: they never move on).
        self.batch_schedule: BatchSchedule | None = None
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._batches: dict[str, BatchObject] = {}
        # The list's order (newest first) and each ID's place in it, made again after a batch is added.
        self._listed: tuple[list[BatchObject], dict[str, int]] | None = None
        self._threads: dict[str, dict[str, RunObject]] = {}
        self._responses: dict[str, ResponseObject] = {}
        self._objects: dict[str, TrackedObject] = {}
        self._jobs: dict[str, FineTuningJobObject] = {}
        self._eval_runs: dict[str, dict[str, EvalRunObject]] = {}
        self._file_batches: dict[str, dict[str, FileBatchObject]] = {}

    @property
    def cancel_delay(self) -> float:
        """Seconds a cancel takes to settle; a change applies to cancels requested afterwards."""
        return self._cancel_delay

    @cancel_delay.setter
    def cancel_delay(self, seconds: float) -> None:
        if not 0 <= seconds < math.inf:
            raise ValueError(f"cancel_delay must be a finite number of seconds >= 0, not {seconds!r}.")
        self._cancel_delay = float(seconds)

    def reset(self) -> None:
        """Forget every object."""
        with self._lock:
            self._batches.clear()
            self._listed = None
            self._threads.clear()
            self._responses.clear()
            self._objects.clear()
            self._jobs.clear()
            self._eval_runs.clear()
            self._file_batches.clear()

    def _register(self, record: TrackedObject) -> None:
        if record.id in self._objects:
            raise ValueError(f"An object with id {record.id!r} already exists.")
        self._objects[record.id] = record

    # Batches

    def create_batch(
        self,
        status: str = "in_progress",
        race_to: str | None = None,
        total_requests: int = 100,
        metadata: Mapping[str, str] | None = None,
        *,
        batch_id: str | None = None,
        endpoint: str = "/v1/chat/completions",
        input_file_id: str | None = None,
        completion_window: str = "24h",
        schedule: BatchSchedule | None = None,
    ) -> dict[str, object]:
        """Create a batch in ``status`` and return it.

        :param race_to: How a later cancel ends instead of ``cancelled`` (``completed``, ``failed``, ``expired``).
        :param total_requests: Requests in the batch; ``in_progress`` works through them over time.
        :param batch_id: ID to use instead of a random ``batch_...`` (any string, for encoding tests).
        :param schedule: How it completes and expires by itself; default the state's ``batch_schedule``.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        _check_status(BATCH, status, race_to)
        if total_requests < 0:
            raise ValueError(f"total_requests cannot be negative: {total_requests!r}.")
        with self._lock:
            now = self.clock()
            batch = BatchObject(
                id=batch_id if batch_id is not None else new_id("batch_", 32),
                status=status,
                created=now,
                race_to=race_to,
                seq=next(self._seq),
                history=[(now, status)],
                times=dict.fromkeys(BATCH_TIMES_AT_CREATION.get(status, ()), now),
                endpoint=endpoint,
                input_file_id=input_file_id if input_file_id is not None else new_id("file-", 22),
                completion_window=completion_window,
                metadata=dict(metadata) if metadata is not None else None,
                total=total_requests,
                schedule=schedule if schedule is not None else self.batch_schedule,
            )
            if status in (CANCELLING, CANCELLED, "expired"):
                batch.done_frozen = 0
            if status == CANCELLING:
                batch.request_cancel(now, self.cancel_delay)
                batch.history = [(now, status)]
            self._register(batch)
            self._batches[batch.id] = batch
            self._listed = None
            return batch.render(now)

    def _batch(self, batch_id: str, now: float) -> BatchObject:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.")
        batch.settle(now)
        return batch

    def get_batch(self, batch_id: str) -> dict[str, object]:
        """Return the batch as the API shows it now.

        :raises ApiError: 404 for an unknown ID.
        """
        with self._lock:
            now = self.clock()
            return self._batch(batch_id, now).render(now)

    def cancel_batch(self, batch_id: str) -> dict[str, object]:
        """Request the cancel of a batch and return it (``cancelling``, or unchanged when already cancelled).

        :raises ApiError: 404 for an unknown ID, 409 for a batch that already ended otherwise.
        """
        with self._lock:
            now = self.clock()
            batch = self._batch(batch_id, now)
            if batch.status in BATCH.cancellable:
                batch.request_cancel(now, self.cancel_delay)
            elif batch.status not in (CANCELLING, CANCELLED):
                raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.")
            return batch.render(now)

    def fail_batch(self, batch_id: str) -> dict[str, object]:
        """Fail a batch now, as the API fails one whose requests cannot run, and return it.

        :raises ApiError: 404 for an unknown ID, 409 for a batch that already ended or is being cancelled.
        """
        with self._lock:
            now = self.clock()
            batch = self._batch(batch_id, now)
            if batch.status not in BATCH.cancellable:
                raise ApiError(409, f"Cannot fail a batch with status '{batch.status}'.")
            batch.fail(now)
            return batch.render(now)

    def list_batches(self, page_size: int = 20, after: str | None = None) -> dict[str, object]:
        """Return one page of batches, newest first, starting after the batch ``after``."""
        with self._lock:
            now = self.clock()
            if self._listed is None:
                ordered = sorted(self._batches.values(), key=lambda b: (b.created, b.seq), reverse=True)
                self._listed = ordered, {batch.id: place for place, batch in enumerate(ordered)}
            ordered, places = self._listed
            start = 0 if after is None else places.get(after, len(ordered) - 1) + 1
            page = ordered[start : start + page_size]
            for batch in page:
                batch.settle(now)
            return {
                "object": "list",
                "data": [batch.render(now) for batch in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": start + page_size < len(ordered),
            }

    # Thread runs

    def create_thread_run(
        self,
        status: str = "in_progress",
        thread_id: str | None = None,
        race_to: str | None = None,
        *,
        run_id: str | None = None,
    ) -> dict[str, object]:
        """Create a run (in a new thread unless ``thread_id`` is given) and return it.

        :param race_to: How a later cancel ends instead of ``cancelled``
            (``completed``, ``failed``, ``incomplete``, ``expired``).
        :param run_id: ID to use instead of a random ``run_...``.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        _check_status(THREAD_RUN, status, race_to)
        with self._lock:
            now = self.clock()
            run = RunObject(
                id=run_id if run_id is not None else new_id("run_"),
                status=status,
                created=now,
                race_to=race_to,
                seq=next(self._seq),
                history=[(now, status)],
                thread_id=thread_id if thread_id is not None else new_id("thread_"),
            )
            if status != "queued":
                run.times["started_at"] = now
            if status in THREAD_RUN.settled - {"incomplete", "expired"}:
                run.times[f"{status}_at"] = now
            if status == CANCELLING:
                run.request_cancel(now, self.cancel_delay)
                run.history = [(now, status)]
            self._register(run)
            self._threads.setdefault(run.thread_id, {})[run.id] = run
            return run.render(now)

    def _run(self, thread_id: str, run_id: str, now: float) -> RunObject:
        runs = self._threads.get(thread_id)
        if runs is None:
            raise ApiError(404, f"No thread found with id '{thread_id}'.")
        run = runs.get(run_id)
        if run is None:
            raise ApiError(404, f"No run found with id '{run_id}'.")
        run.settle(now)
        return run

    def get_thread_run(self, thread_id: str, run_id: str) -> dict[str, object]:
        """Return the run as the API shows it now.

        :raises ApiError: 404 for an unknown thread or run.
        """
        with self._lock:
            now = self.clock()
            return self._run(thread_id, run_id, now).render(now)

    def cancel_thread_run(self, thread_id: str, run_id: str) -> dict[str, object]:
        """Request the cancel of a run and return it (``cancelling``).

        :raises ApiError: 404 for an unknown thread or run, 400 for a run not in a cancellable status.
        """
        with self._lock:
            now = self.clock()
            run = self._run(thread_id, run_id, now)
            if run.status not in THREAD_RUN.cancellable:
                raise ApiError(400, f"Cannot cancel run with status '{run.status}'.")
            run.request_cancel(now, self.cancel_delay)
            return run.render(now)

    # Responses

    def create_response(
        self, status: str = "in_progress", background: bool = True, *, response_id: str | None = None
    ) -> dict[str, object]:
        """Create a response and return it.

        :param background: Only background responses can be cancelled.
        :param response_id: ID to use instead of a random ``resp_...``.
        :raises ValueError: On an unknown status or an ID already used.
        """
        _check_status(RESPONSE, status, None)
        with self._lock:
            now = self.clock()
            response = ResponseObject(
                id=response_id if response_id is not None else new_id("resp_", 48),
                status=status,
                created=now,
                race_to=None,
                seq=next(self._seq),
                history=[(now, status)],
                background=background,
            )
            if status == "completed":
                response.times["completed_at"] = now
            self._register(response)
            self._responses[response.id] = response
            return response.render(now)

    def _response(self, response_id: str) -> ResponseObject:
        response = self._responses.get(response_id)
        if response is None:
            raise ApiError(404, f"Response with id '{response_id}' not found.")
        return response

    def get_response(self, response_id: str) -> dict[str, object]:
        """Return the response as the API shows it now.

        :raises ApiError: 404 for an unknown ID.
        """
        with self._lock:
            return self._response(response_id).render(self.clock())

    def cancel_response(self, response_id: str) -> dict[str, object]:
        """Cancel a background response at once and return it; a cancelled one is returned unchanged.

        :raises ApiError: 404 for an unknown ID or a response not created in the background,
            400 for one that already ended otherwise.
        """
        with self._lock:
            now = self.clock()
            response = self._response(response_id)
            if not response.background:
                raise ApiError(404, "Cannot cancel a synchronous response.")
            if response.status in RESPONSE.cancellable:
                response.change(CANCELLED, now)
            elif response.status != CANCELLED:
                raise ApiError(400, f"Cannot cancel a {response.status} response.")
            return response.render(now)

    # Fine-tuning jobs, eval runs, vector store file batches (kinds.py: no `cancelling`, a cancel is at once)

    def create_fine_tuning_job(
        self,
        status: str = "running",
        race_to: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        job_id: str | None = None,
        model: str = "gpt-4o-mini-2024-07-18",
        training_file: str | None = None,
        trained_tokens: int = TRAINING_TOKENS,
        **options: object,
    ) -> dict[str, object]:
        """Create a fine-tuning job in ``status`` and return it.

        :param race_to: How a later cancel ends instead of ``cancelled`` (``succeeded``, ``failed``): the cancel
            is accepted, and the job ends so ``cancel_delay`` seconds later.
        :param trained_tokens: Tokens of the whole training; ``running`` trains through them over time.
        :param options: More fields of the job as created (``validation_file``, ``suffix``, ``seed``, ``method``,
            ``integrations``).
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        check_kind_status(FINE_TUNING_JOB, status, race_to)
        with self._lock:
            now = self.clock()
            job = FineTuningJobObject(
                id=job_id if job_id is not None else new_id("ftjob-", 24),
                status=status,
                created=now,
                race_to=race_to,
                seq=next(self._seq),
                history=[(now, status)],
                working="running",
                units=trained_tokens,
                units_per_second=TRAINED_TOKENS_PER_SECOND,
                model=model,
                training_file=training_file if training_file is not None else new_id("file-", 22),
                metadata=dict(metadata) if metadata is not None else None,
                **options,  # type: ignore[arg-type]  # the API's create parameters, checked by api.py
            )
            job.start(status, now, FINE_TUNING_JOB)
            self._register(job)
            self._jobs[job.id] = job
            return job.render(now)

    def _job(self, job_id: str, now: float) -> FineTuningJobObject:
        job = self._jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"Could not find fine tune: {job_id}", code="fine_tune_not_found")
        job.settle(now)
        return job

    def get_fine_tuning_job(self, job_id: str) -> dict[str, object]:
        """Return the job as the API shows it now.

        :raises ApiError: 404 for an unknown ID.
        """
        with self._lock:
            now = self.clock()
            return self._job(job_id, now).render(now)

    def cancel_fine_tuning_job(self, job_id: str) -> dict[str, object]:
        """Cancel a job and return it (``cancelled``, or still running when it races to its end).

        :raises ApiError: 404 for an unknown ID, 400 for a job that already ended (cancelled included).
        """
        with self._lock:
            now = self.clock()
            return self._cancel_working(self._job(job_id, now), FINE_TUNING_JOB, now)

    def list_fine_tuning_jobs(
        self, page_size: int = 20, after: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> dict[str, object]:
        """Return one page of the jobs whose metadata holds ``metadata``, newest first, after the job ``after``."""
        with self._lock:
            now = self.clock()
            wanted = metadata or {}
            return self._page(
                [job for job in self._jobs.values() if metadata_matches(job.metadata, wanted)], page_size, after, now
            )

    def create_eval_run(
        self,
        eval_id: str,
        status: str = "in_progress",
        race_to: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        run_id: str | None = None,
        items: int = 50,
        **options: object,
    ) -> dict[str, object]:
        """Create a run of the eval ``eval_id`` in ``status`` and return it.

        :param race_to: How a later cancel ends instead of ``canceled`` (``completed``, ``failed``).
        :param items: Items to grade; ``in_progress`` grades through them over time.
        :param options: More fields of the run as created (``name``, ``model``, ``data_source``).
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        check_kind_status(EVAL_RUN, status, race_to)
        with self._lock:
            now = self.clock()
            run = EvalRunObject(
                id=run_id if run_id is not None else new_id("evalrun_", 32),
                status=status,
                created=now,
                race_to=race_to,
                seq=next(self._seq),
                history=[(now, status)],
                working="in_progress",
                units=items,
                units_per_second=EVAL_ITEMS_PER_SECOND,
                eval_id=eval_id,
                metadata=dict(metadata) if metadata is not None else None,
                **options,  # type: ignore[arg-type]  # the API's create parameters, checked by api.py
            )
            run.start(status, now, EVAL_RUN)
            self._register(run)
            self._eval_runs.setdefault(eval_id, {})[run.id] = run
            return run.render(now)

    def _eval_run(self, eval_id: str, run_id: str, now: float) -> EvalRunObject:
        run = self._eval_runs.get(eval_id, {}).get(run_id)
        if run is None:
            raise ApiError(404, f"Eval run with id '{run_id}' not found for eval '{eval_id}'.")
        run.settle(now)
        return run

    def get_eval_run(self, eval_id: str, run_id: str) -> dict[str, object]:
        """Return the eval run as the API shows it now.

        :raises ApiError: 404 for an unknown eval or run.
        """
        with self._lock:
            now = self.clock()
            return self._eval_run(eval_id, run_id, now).render(now)

    def cancel_eval_run(self, eval_id: str, run_id: str) -> dict[str, object]:
        """Cancel an eval run and return it (``canceled``, or still running when it races to its end).

        :raises ApiError: 404 for an unknown eval or run, 400 for a run that already ended.
        """
        with self._lock:
            now = self.clock()
            return self._cancel_working(self._eval_run(eval_id, run_id, now), EVAL_RUN, now)

    def list_eval_runs(self, eval_id: str, page_size: int = 20, after: str | None = None) -> dict[str, object]:
        """Return one page of the eval's runs, newest first, after the run ``after``."""
        with self._lock:
            return self._page(list(self._eval_runs.get(eval_id, {}).values()), page_size, after, self.clock())

    def create_vector_store_file_batch(
        self,
        vector_store_id: str,
        status: str = "in_progress",
        race_to: str | None = None,
        *,
        batch_id: str | None = None,
        files: int = 10,
    ) -> dict[str, object]:
        """Create a file batch of the vector store ``vector_store_id`` in ``status`` and return it.

        :param race_to: How a later cancel ends instead of ``cancelled`` (``completed``, ``failed``).
        :param files: Files in the batch; ``in_progress`` ingests them over time.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        check_kind_status(VECTOR_STORE_FILE_BATCH, status, race_to)
        with self._lock:
            now = self.clock()
            batch = FileBatchObject(
                id=batch_id if batch_id is not None else new_id("vsfb_", 32),
                status=status,
                created=now,
                race_to=race_to,
                seq=next(self._seq),
                history=[(now, status)],
                working="in_progress",
                units=files,
                units_per_second=FILES_PER_SECOND,
                vector_store_id=vector_store_id,
            )
            batch.start(status, now, VECTOR_STORE_FILE_BATCH)
            self._register(batch)
            self._file_batches.setdefault(vector_store_id, {})[batch.id] = batch
            return batch.render(now)

    def _file_batch(self, vector_store_id: str, batch_id: str, now: float) -> FileBatchObject:
        batch = self._file_batches.get(vector_store_id, {}).get(batch_id)
        if batch is None:
            raise ApiError(404, f"No file batch found with id '{batch_id}' in vector store '{vector_store_id}'.")
        batch.settle(now)
        return batch

    def get_vector_store_file_batch(self, vector_store_id: str, batch_id: str) -> dict[str, object]:
        """Return the file batch as the API shows it now.

        :raises ApiError: 404 for an unknown vector store or file batch.
        """
        with self._lock:
            now = self.clock()
            return self._file_batch(vector_store_id, batch_id, now).render(now)

    def cancel_vector_store_file_batch(self, vector_store_id: str, batch_id: str) -> dict[str, object]:
        """Cancel a file batch and return it (``cancelled``, or still in progress when it races to its end).

        :raises ApiError: 404 for an unknown vector store or file batch, 400 for one that already ended.
        """
        with self._lock:
            now = self.clock()
            batch = self._file_batch(vector_store_id, batch_id, now)
            return self._cancel_working(batch, VECTOR_STORE_FILE_BATCH, now)

    def _cancel_working(self, record: WorkingObject, resource: CancellableResource, now: float) -> dict[str, object]:
        if record.status not in resource.cancellable:
            raise ApiError(400, cannot_cancel_message(resource, record.status))
        record.cancel(now, self.cancel_delay, resource)
        return record.render(now)

    @staticmethod
    def _page(records: list[WorkingObject], page_size: int, after: str | None, now: float) -> dict[str, object]:
        """Return one page of ``records``, newest first, after the record ``after`` (an empty one if it is unknown)."""
        ordered = sorted(records, key=lambda record: (record.created, record.seq), reverse=True)
        ids = [record.id for record in ordered]
        start = 0 if after is None else (ids.index(after) + 1 if after in ids else len(ids))
        page = ordered[start : start + page_size]
        for record in page:
            record.settle(now)
        return {
            "object": "list",
            "data": [record.render(now) for record in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": start + page_size < len(ordered),
        }

    def status_history(self, object_id: str) -> list[tuple[float, str]]:
        """Return ``(epoch seconds, status)`` for each status the object has had, from its creation.

        :raises ApiError: 404 for an unknown ID.
        """
        with self._lock:
            record = self._objects.get(object_id)
            if record is None:
                raise ApiError(404, f"No object found with id '{object_id}'.")
            record.settle(self.clock())
            return list(record.history)
