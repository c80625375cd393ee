"""The emulator as one object: state, faults, journal and the HTTP server, with the Python API tests use."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from airflow_psopenai.testing.admin import ADMIN_ROOT, AdminApi
from airflow_psopenai.testing.api import OpenAIApi, is_api_path
from airflow_psopenai.testing.faults import Fault, FaultPlan
from airflow_psopenai.testing.journal import Journal, JournalEntry
from airflow_psopenai.testing.messages import HttpRequest, Pending, error_reply
from airflow_psopenai.testing.objects import BatchSchedule
from airflow_psopenai.testing.server import HttpServer
from airflow_psopenai.testing.state import Clock, EmulatorState

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

    from starlette.responses import Response

DEFAULT_API_KEY = "sk-emulator-key"


class OpenAIEmulator:
    """An OpenAI API emulator for batches, thread runs and background responses, served over HTTP.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with OpenAIEmulator() as emu:
            batch = emu.create_batch()
            client = openai.OpenAI(base_url=emu.api_base, api_key=emu.api_key)
            client.batches.cancel(batch["id"])

    The API is served under ``/v1`` (OpenAI), ``/openai`` (Azure's dated API, which needs
    ``?api-version=``) and ``/openai/v1`` (Azure's v1 API); admin endpoints under ``/_emulator``
    (see :mod:`airflow_psopenai.testing.admin`).

    :param api_key: The only key accepted.
    :param cancel_delay: Seconds a batch or run stays ``cancelling`` before it settles.
    :param host: Address to bind.
    :param port: Port to bind; 0 picks a free one.
    :param latency: Seconds added before every API answer (not admin ones).
    :param clock: Source of epoch seconds for statuses, timestamps and the journal; a
        :class:`~airflow_psopenai.testing.state.ManualClock` makes tests independent of real time.
    :param batch_schedule: How the batches created without a schedule of their own progress, complete and
        expire; None (the default): they stay in the status they were created in until cancelled.
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        cancel_delay: float = 0.2,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        clock: Clock | None = None,
        batch_schedule: BatchSchedule | None = None,
    ) -> None:
        """Prepare the emulator; nothing listens before :meth:`start`."""
        if not api_key:
            raise ValueError("api_key cannot be empty.")
        self._api_key = api_key
        self._state = EmulatorState(clock or time.time, cancel_delay)
        self._faults = FaultPlan()
        self._journal = Journal()
        self._api = OpenAIApi(self._state, api_key)
        self._admin = AdminApi(self)
        self._server = HttpServer(self._begin, host, port)
        self.latency = latency
        self.batch_schedule = batch_schedule

    # Life cycle

    def start(self) -> OpenAIEmulator:
        """Start serving; return once the port is open.

        :raises OSError: When the address cannot be bound.
        """
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving: close the port and every connection, and join the server thread."""
        self._server.stop()

    def __enter__(self) -> OpenAIEmulator:
        """Start serving."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop serving."""
        self.stop()

    # Settings

    @property
    def base_url(self) -> str:
        """Return the root URL, e.g. ``http://127.0.0.1:8765`` (Azure clients take this as the endpoint)."""
        if not self._server.running:
            raise RuntimeError("The emulator is not running: call start() first.")
        host = self._server.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self._server.port}"

    @property
    def api_base(self) -> str:
        """Return the OpenAI API base URL, e.g. ``http://127.0.0.1:8765/v1``."""
        return self.base_url + "/v1"

    @property
    def api_key(self) -> str:
        """Return the key the emulator accepts."""
        return self._api_key

    @property
    def cancel_delay(self) -> float:
        """Seconds a cancel takes to settle; a change applies to cancels requested afterwards."""
        return self._state.cancel_delay

    @cancel_delay.setter
    def cancel_delay(self, seconds: float) -> None:
        self._state.cancel_delay = seconds

    @property
    def latency(self) -> float:
        """Seconds added before every API answer, without blocking the server."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        if not 0 <= seconds < math.inf:
            raise ValueError(f"latency must be a finite number of seconds >= 0, not {seconds!r}.")
        self._latency = float(seconds)

    @property
    def batch_schedule(self) -> BatchSchedule | None:
        """How batches created from now on without a schedule of their own progress, complete and expire."""
        return self._state.batch_schedule

    @batch_schedule.setter
    def batch_schedule(self, schedule: BatchSchedule | None) -> None:
        if schedule is not None and not isinstance(schedule, BatchSchedule):
            raise ValueError(f"batch_schedule must be a BatchSchedule or None, not {schedule!r}.")
        self._state.batch_schedule = schedule

    # Objects

    def create_batch(
        self,
        status: str = "in_progress",
        race_to: str | None = None,
        total_requests: int = 100,
        metadata: Mapping[str, str] | None = None,
        *,
        batch_id: str | None = None,
        schedule: BatchSchedule | None = None,
    ) -> dict[str, object]:
        """Create a batch and return it as the API shows it.

        :param status: Any batch status; ``cancelling`` is as if a cancel was just requested.
        :param race_to: How a later cancel ends instead of ``cancelled``: ``completed``, ``failed`` or ``expired``.
        :param total_requests: Requests in the batch; while ``in_progress`` it completes a few per second.
        :param metadata: The batch's metadata.
        :param batch_id: ID to use instead of a random ``batch_...`` (any string, e.g. to test encoding).
        :param schedule: How it progresses, completes and expires; default :attr:`batch_schedule`.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        return self._state.create_batch(status, race_to, total_requests, metadata, batch_id=batch_id, schedule=schedule)

    def fail_batch(self, batch_id: str) -> dict[str, object]:
        """Fail a batch that has not ended, now, and return it (``failed``, with the requests it did).

        :raises ApiError: For an unknown ID (404), or a batch that ended or is being cancelled (409).
        """
        return self._state.fail_batch(batch_id)

    def create_thread_run(
        self,
        status: str = "in_progress",
        thread_id: str | None = None,
        race_to: str | None = None,
        *,
        run_id: str | None = None,
    ) -> dict[str, object]:
        """Create a thread run and return it as the API shows it.

        :param status: Any run status; ``cancelling`` is as if a cancel was just requested.
        :param thread_id: Thread to add the run to (new or existing); a new random one when None.
        :param race_to: How a later cancel ends instead of ``cancelled``:
            ``completed``, ``failed``, ``incomplete`` or ``expired``.
        :param run_id: ID to use instead of a random ``run_...``.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        return self._state.create_thread_run(status, thread_id, race_to, run_id=run_id)

    def create_response(
        self, status: str = "in_progress", background: bool = True, *, response_id: str | None = None
    ) -> dict[str, object]:
        """Create a response and return it as the API shows it.

        :param status: Any response status.
        :param background: Whether it was created with ``background: true`` (only those can be cancelled).
        :param response_id: ID to use instead of a random ``resp_...``.
        :raises ValueError: On an unknown status or an ID already used.
        """
        return self._state.create_response(status, background, response_id=response_id)

    def get_batch(self, batch_id: str) -> dict[str, object]:
        """Return the batch as the API shows it now.

        :raises ApiError: For an unknown ID (status 404).
        """
        return self._state.get_batch(batch_id)

    def get_thread_run(self, thread_id: str, run_id: str) -> dict[str, object]:
        """Return the run as the API shows it now.

        :raises ApiError: For an unknown thread or run (status 404).
        """
        return self._state.get_thread_run(thread_id, run_id)

    def get_response(self, response_id: str) -> dict[str, object]:
        """Return the response as the API shows it now.

        :raises ApiError: For an unknown ID (status 404).
        """
        return self._state.get_response(response_id)

    def create_fine_tuning_job(
        self,
        status: str = "running",
        race_to: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        job_id: str | None = None,
        model: str = "gpt-4o-mini-2024-07-18",
        training_file: str | None = None,
    ) -> dict[str, object]:
        """Create a fine-tuning job and return it as the API shows it.

        :param status: Any job status; ``running`` trains a thousand tokens a second (``trained_tokens``).
        :param race_to: How a later cancel ends instead of ``cancelled``: ``succeeded`` or ``failed``. The
            cancel is accepted, the job still ``running``, and it ends so after ``cancel_delay``.
        :param metadata: The job's metadata (the job list filters by it).
        :param job_id: ID to use instead of a random ``ftjob-...``.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        return self._state.create_fine_tuning_job(
            status, race_to, metadata, job_id=job_id, model=model, training_file=training_file
        )

    def create_eval_run(
        self,
        eval_id: str = "eval_emulated",
        status: str = "in_progress",
        race_to: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        run_id: str | None = None,
    ) -> dict[str, object]:
        """Create a run of an eval and return it as the API shows it.

        :param status: Any eval run status (``canceled`` is the API's spelling); ``in_progress`` grades two
            items a second (``result_counts``).
        :param race_to: How a later cancel ends instead of ``canceled``: ``completed`` or ``failed``.
        :param run_id: ID to use instead of a random ``evalrun_...``.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        return self._state.create_eval_run(eval_id, status, race_to, metadata, run_id=run_id)

    def create_vector_store_file_batch(
        self,
        vector_store_id: str = "vs_emulated",
        status: str = "in_progress",
        race_to: str | None = None,
        *,
        batch_id: str | None = None,
        files: int = 10,
    ) -> dict[str, object]:
        """Create a file batch of a vector store and return it as the API shows it.

        :param status: Any file batch status; ``in_progress`` ingests a file a second (``file_counts``).
        :param race_to: How a later cancel ends instead of ``cancelled``: ``completed`` or ``failed``.
        :param batch_id: ID to use instead of a random ``vsfb_...``.
        :raises ValueError: On an unknown status or ``race_to``, or an ID already used.
        """
        return self._state.create_vector_store_file_batch(
            vector_store_id, status, race_to, batch_id=batch_id, files=files
        )

    def get_fine_tuning_job(self, job_id: str) -> dict[str, object]:
        """Return the fine-tuning job as the API shows it now.

        :raises ApiError: For an unknown ID (status 404).
        """
        return self._state.get_fine_tuning_job(job_id)

    def get_eval_run(self, eval_id: str, run_id: str) -> dict[str, object]:
        """Return the eval run as the API shows it now.

        :raises ApiError: For an unknown eval or run (status 404).
        """
        return self._state.get_eval_run(eval_id, run_id)

    def get_vector_store_file_batch(self, vector_store_id: str, batch_id: str) -> dict[str, object]:
        """Return the file batch as the API shows it now.

        :raises ApiError: For an unknown vector store or file batch (status 404).
        """
        return self._state.get_vector_store_file_batch(vector_store_id, batch_id)

    def status_history(self, object_id: str) -> list[tuple[float, str]]:
        """Return ``(epoch seconds, status)`` for each status change of an object, from its creation.

        :raises ApiError: For an unknown ID (status 404).
        """
        return self._state.status_history(object_id)

    # Faults

    def add_fault(
        self, fault: Fault, method: str | None = None, path: str | None = None, times: int = 1, *, skip: int = 0
    ) -> None:
        """Inject ``fault`` into the next ``times`` API requests matching ``method`` and ``path``.

        :param path: :func:`fnmatch.fnmatchcase` glob on the decoded path, e.g. ``/v1/batches/*/cancel``.
        :param skip: Matching requests answered normally first: ``skip=1`` on the list fails its second page.
        """
        self._faults.add(fault, method, path, times, skip=skip)

    def set_random_faults(
        self,
        rate: float,
        seed: int | None = None,
        faults: Sequence[Fault] = (),
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Inject one of ``faults`` into each matching API request with probability ``rate``.

        The same ``seed`` gives the same faults for the same sequence of requests. Scripted faults
        from :meth:`add_fault` go first. Replaces earlier random faults; ``rate=0`` turns them off.
        """
        self._faults.set_random(rate, seed, faults, method, path)

    def clear_faults(self) -> None:
        """Forget every scripted and random fault."""
        self._faults.clear()

    # Journal

    @property
    def journal(self) -> list[JournalEntry]:
        """Return every API request received so far, oldest first (admin requests are not recorded)."""
        return self._journal.entries()

    def requests(self, method: str | None = None, path: str | None = None) -> list[JournalEntry]:
        """Return the journal entries with ``method`` and a decoded path matching the glob ``path``."""
        return self._journal.entries(method, path)

    def reset(self) -> None:
        """Forget every object, fault and journal entry (settings stay)."""
        self._state.reset()
        self._faults.clear()
        self._journal.clear()

    # Serving

    def _begin(self, request: HttpRequest) -> Pending:
        """Decide how to answer one request: journal it, apply latency and faults."""
        segments = request.segments
        if segments[:1] == [ADMIN_ROOT]:
            return Pending(lambda: self._admin.handle(request))
        if not is_api_path(segments):
            return Pending(lambda: error_reply(404, f"Invalid URL ({request.method} {request.raw_path})"))
        fault = self._faults.pick(request.method, request.path)
        handle = self._journal.record(JournalEntry.of(request, self._state.clock(), fault))
        # An applied fault lets the API act when the request arrives; only its answer is lost.
        applied = self._api.handle(request) if fault is not None and fault.applied else None

        def finish() -> Response | None:
            if fault is not None and fault.kind == "drop":
                return None
            if fault is not None and fault.answers:
                answer = fault.reply(request.headers)
            else:
                answer = applied or self._api.handle(request)
                if fault is not None:
                    answer = fault.decorate(answer)
            self._journal.answered(handle, answer.status_code)
            return answer

        return Pending(finish, self.latency + (fault.delay if fault is not None else 0.0))
