"""Fidelity with the official ``openai`` SDK: its models parse every answer, its errors map every failure.

The SDK's client checks every answer against the spec's schema for it (conftest's ``check_response``): a test
ends with no answer that broke the spec.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import jsonschema
import openai
import pytest

from airflow_psopenai.testing import Fault, ManualClock, OpenAIEmulator
from tests.testing.conftest import check_response

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def client(emulator: OpenAIEmulator) -> Iterator[openai.OpenAI]:
    violations: list[str] = []

    def check(response: Any) -> None:
        try:
            check_response(response)
        except (AssertionError, jsonschema.ValidationError) as error:  # kept: the SDK would hide a raise
            violations.append(f"{response.request.method} {response.url.path}: {error}")

    http_client = openai.DefaultHttpxClient(event_hooks={"response": [check]})
    with openai.OpenAI(
        base_url=emulator.api_base, api_key=emulator.api_key, max_retries=0, http_client=http_client
    ) as sdk_client:
        yield sdk_client
    assert violations == []


@pytest.fixture(autouse=True)
def _no_assistants_deprecation_warnings() -> Iterator[None]:
    # openai 3.x marks every client.beta.threads method deprecated (the Assistants API is shut down),
    # but still has them; the emulator serves runs for servers that keep that API.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The Assistants API is deprecated", DeprecationWarning)
        yield


class TestBatches:
    def test_retrieve_cancel_and_settle(
        self, emulator: OpenAIEmulator, client: openai.OpenAI, clock: ManualClock
    ) -> None:
        created = emulator.create_batch(total_requests=10, metadata={"team": "data"})
        batch = client.batches.retrieve(str(created["id"]))
        assert (batch.id, batch.status, batch.metadata) == (created["id"], "in_progress", {"team": "data"})
        assert batch.request_counts is not None and batch.request_counts.total == 10

        assert client.batches.cancel(batch.id).status == "cancelling"
        clock.advance(emulator.cancel_delay)
        settled = client.batches.retrieve(batch.id)
        assert settled.status == "cancelled"
        assert settled.cancelled_at is not None

    def test_list_paginates_newest_first(
        self, emulator: OpenAIEmulator, client: openai.OpenAI, clock: ManualClock
    ) -> None:
        ids = []
        for _ in range(5):
            ids.append(emulator.create_batch()["id"])
            clock.advance(1)
        first_page = client.batches.list(limit=2)
        assert [batch.id for batch in first_page.data] == ids[:-3:-1]
        assert first_page.has_more
        assert [batch.id for batch in client.batches.list(limit=2)] == ids[::-1]
        assert len(emulator.requests("GET", "/v1/batches")) == 4

    def test_cancel_of_a_completed_batch_is_a_conflict(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        batch = emulator.create_batch("completed")
        with pytest.raises(openai.ConflictError) as caught:
            client.batches.cancel(str(batch["id"]))
        assert caught.value.status_code == 409
        assert caught.value.message.endswith("Cannot cancel a batch with status 'completed'.")
        assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")

    def test_unknown_batch_is_not_found(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.NotFoundError, match="No batch found with id 'batch_nope'"):
            client.batches.retrieve("batch_nope")

    def test_wrong_key_is_an_authentication_error(self, emulator: OpenAIEmulator) -> None:
        with (
            openai.OpenAI(base_url=emulator.api_base, api_key="sk-wrong-key-123456", max_retries=0) as wrong,
            pytest.raises(openai.AuthenticationError) as caught,
        ):
            wrong.batches.list()
        assert caught.value.code == "invalid_api_key"

    def test_rate_limit_is_a_rate_limit_error(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        emulator.add_fault(Fault.rate_limit(retry_after=1))
        with pytest.raises(openai.RateLimitError) as caught:
            client.batches.list()
        assert caught.value.code == "rate_limit_exceeded"

    def test_sdk_retries_honour_retry_after_ms(self, emulator: OpenAIEmulator) -> None:
        emulator.add_fault(Fault.rate_limit(retry_after_ms=10), times=2)
        with openai.OpenAI(base_url=emulator.api_base, api_key=emulator.api_key, max_retries=2) as patient:
            patient.batches.list()
        assert [entry.status for entry in emulator.journal] == [429, 429, 200]

    def test_should_retry_false_stops_sdk_retries(self, emulator: OpenAIEmulator) -> None:
        emulator.add_fault(Fault.server_error(503, should_retry=False))
        with (
            openai.OpenAI(base_url=emulator.api_base, api_key=emulator.api_key, max_retries=2) as patient,
            pytest.raises(openai.InternalServerError),
        ):
            patient.batches.list()
        assert len(emulator.journal) == 1

    def test_html_error_page_is_an_api_status_error(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        emulator.add_fault(Fault.server_error(502, html=True))
        with pytest.raises(openai.InternalServerError) as caught:
            client.batches.list()
        assert caught.value.status_code == 502

    def test_dropped_connection_is_a_connection_error(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        emulator.add_fault(Fault.drop())
        with pytest.raises(openai.APIConnectionError):
            client.batches.list()

    def test_hang_is_a_timeout(self, emulator: OpenAIEmulator) -> None:
        emulator.add_fault(Fault.hang())
        with (
            openai.OpenAI(base_url=emulator.api_base, api_key=emulator.api_key, max_retries=0, timeout=0.3) as hasty,
            pytest.raises(openai.APITimeoutError),
        ):
            hasty.batches.list()

    def test_azure_client(self, emulator: OpenAIEmulator) -> None:
        batch = emulator.create_batch()
        with openai.AzureOpenAI(
            azure_endpoint=emulator.base_url, api_key=emulator.api_key, api_version="2024-10-21", max_retries=0
        ) as azure:
            assert azure.batches.cancel(str(batch["id"])).status == "cancelling"
        (entry,) = emulator.journal
        assert entry.path == f"/openai/batches/{batch['id']}/cancel"
        assert entry.query == {"api-version": "2024-10-21"}
        assert entry.headers["api-key"] == "<redacted>"


class TestThreadRuns:
    def test_retrieve_and_cancel(self, emulator: OpenAIEmulator, client: openai.OpenAI, clock: ManualClock) -> None:
        created = emulator.create_thread_run("requires_action")
        thread_id, run_id = str(created["thread_id"]), str(created["id"])
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        assert (run.id, run.thread_id, run.status) == (run_id, thread_id, "requires_action")
        assert run.required_action is not None
        assert client.beta.threads.runs.cancel(run_id, thread_id=thread_id).status == "cancelling"
        clock.advance(emulator.cancel_delay)
        assert client.beta.threads.runs.retrieve(run_id, thread_id=thread_id).status == "cancelled"
        assert emulator.journal[0].headers["openai-beta"] == "assistants=v2"

    def test_cancel_of_a_completed_run_is_a_bad_request(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        run = emulator.create_thread_run("completed")
        with pytest.raises(openai.BadRequestError, match=r"Cannot cancel run with status 'completed'\."):
            client.beta.threads.runs.cancel(str(run["id"]), thread_id=str(run["thread_id"]))

    def test_unknown_run_is_not_found(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        run = emulator.create_thread_run()
        with pytest.raises(openai.NotFoundError, match="No run found"):
            client.beta.threads.runs.retrieve("run_nope", thread_id=str(run["thread_id"]))


class TestResponses:
    def test_retrieve_and_cancel(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        created = emulator.create_response("queued")
        response = client.responses.retrieve(str(created["id"]))
        assert (response.id, response.status, response.background) == (created["id"], "queued", True)
        assert client.responses.cancel(response.id).status == "cancelled"
        assert client.responses.cancel(response.id).status == "cancelled"

    def test_completed_response_parses(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        created = emulator.create_response("completed")
        response = client.responses.retrieve(str(created["id"]))
        assert response.usage is not None and response.usage.total_tokens > 0

    def test_cancel_of_a_foreground_response_is_not_found(
        self, emulator: OpenAIEmulator, client: openai.OpenAI
    ) -> None:
        response = emulator.create_response(background=False)
        with pytest.raises(openai.NotFoundError):
            client.responses.cancel(str(response["id"]))

    def test_cancel_of_a_completed_response_is_a_bad_request(
        self, emulator: OpenAIEmulator, client: openai.OpenAI
    ) -> None:
        response = emulator.create_response("completed")
        with pytest.raises(openai.BadRequestError, match=r"Cannot cancel a completed response\."):
            client.responses.cancel(str(response["id"]))


class TestFineTuningJobs:
    def test_create_retrieve_list_and_cancel(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        job = client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18",
            training_file="file-train",
            suffix="demo",
            seed=7,
            metadata={"airflow_dag_id": "d", "team": "data"},
        )
        assert (job.status, job.training_file, job.seed, job.metadata) == (
            "validating_files",
            "file-train",
            7,
            {"airflow_dag_id": "d", "team": "data"},
        )
        other = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file="file-other")
        assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "data"})] == [job.id]
        assert {j.id for j in client.fine_tuning.jobs.list()} == {job.id, other.id}
        (listed,) = emulator.requests("GET", "/v1/fine_tuning/jobs")[:1]
        assert listed.query == {"metadata[team]": "data"}
        cancelled = client.fine_tuning.jobs.cancel(job.id)
        assert cancelled.status == "cancelled" and cancelled.finished_at is not None
        assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"

    def test_running_job_reports_its_trained_tokens(
        self, emulator: OpenAIEmulator, client: openai.OpenAI, clock: ManualClock
    ) -> None:
        job_id = str(emulator.create_fine_tuning_job()["id"])
        clock.advance(3)
        assert client.fine_tuning.jobs.cancel(job_id).trained_tokens == 3000
        clock.advance(10)
        assert client.fine_tuning.jobs.retrieve(job_id).trained_tokens == 3000

    def test_cancel_that_loses_the_race(
        self, emulator: OpenAIEmulator, client: openai.OpenAI, clock: ManualClock
    ) -> None:
        job_id = str(emulator.create_fine_tuning_job(race_to="succeeded")["id"])
        assert client.fine_tuning.jobs.cancel(job_id).status == "running"
        clock.advance(emulator.cancel_delay)
        done = client.fine_tuning.jobs.retrieve(job_id)
        assert (done.status, done.fine_tuned_model is not None) == ("succeeded", True)

    def test_cancel_of_a_succeeded_job_is_a_bad_request(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        job = emulator.create_fine_tuning_job("succeeded")
        with pytest.raises(openai.BadRequestError, match=r"Cannot cancel fine-tuning job with status 'succeeded'\."):
            client.fine_tuning.jobs.cancel(str(job["id"]))

    def test_unknown_job_is_not_found(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-nope")

    def test_faults_apply(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        job = emulator.create_fine_tuning_job()
        emulator.add_fault(Fault.server_error(503), path="/v1/fine_tuning/jobs/*")
        with pytest.raises(openai.InternalServerError):
            client.fine_tuning.jobs.cancel(str(job["id"]))
        assert emulator.get_fine_tuning_job(str(job["id"]))["status"] == "running"


class TestEvalRuns:
    def test_create_retrieve_list_and_cancel(
        self, emulator: OpenAIEmulator, client: openai.OpenAI, clock: ManualClock
    ) -> None:
        run = client.evals.runs.create(
            "eval_1",
            data_source={"type": "jsonl", "source": {"type": "file_id", "id": "file-items"}},
            name="nightly",
            metadata={"team": "data"},
        )
        assert (run.status, run.eval_id, run.name) == ("queued", "eval_1", "nightly")
        assert [r.id for r in client.evals.runs.list("eval_1")] == [run.id]
        assert list(client.evals.runs.list("eval_2")) == []
        running = emulator.create_eval_run("eval_1")
        clock.advance(4)
        cancelled = client.evals.runs.cancel(str(running["id"]), eval_id="eval_1")
        assert cancelled.status == "canceled"
        assert cancelled.result_counts.passed + cancelled.result_counts.failed == 8
        # The SDK posts to .../cancel; the spec (and this provider) to the run itself: the emulator serves both.
        (cancel,) = emulator.requests("POST", f"/v1/evals/eval_1/runs/{running['id']}/cancel")
        assert cancel.status == 200
        assert client.evals.runs.retrieve(str(running["id"]), eval_id="eval_1").status == "canceled"

    def test_cancel_of_a_completed_run_is_a_bad_request(self, emulator: OpenAIEmulator, client: openai.OpenAI) -> None:
        run = emulator.create_eval_run(status="completed")
        with pytest.raises(openai.BadRequestError, match="Cannot cancel eval run with status 'completed'"):
            client.evals.runs.cancel(str(run["id"]), eval_id=str(run["eval_id"]))

    def test_unknown_run_is_not_found(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.NotFoundError):
            client.evals.runs.retrieve("evalrun_nope", eval_id="eval_1")


class TestVectorStoreFileBatches:
    def test_create_retrieve_and_cancel(
        self, emulator: OpenAIEmulator, client: openai.OpenAI, clock: ManualClock
    ) -> None:
        batch = client.vector_stores.file_batches.create("vs_1", file_ids=["file-a", "file-b", "file-c"])
        assert (batch.status, batch.vector_store_id, batch.file_counts.total) == ("in_progress", "vs_1", 3)
        clock.advance(1)
        cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id="vs_1")
        assert cancelled.status == "cancelled"
        assert (cancelled.file_counts.completed, cancelled.file_counts.cancelled) == (1, 2)
        assert client.vector_stores.file_batches.retrieve(batch.id, vector_store_id="vs_1").status == "cancelled"

    def test_cancel_of_a_completed_batch_is_a_bad_request(
        self, emulator: OpenAIEmulator, client: openai.OpenAI
    ) -> None:
        batch = emulator.create_vector_store_file_batch(status="completed")
        with pytest.raises(openai.BadRequestError, match="Cannot cancel vector store file batch"):
            client.vector_stores.file_batches.cancel(str(batch["id"]), vector_store_id="vs_emulated")

    def test_unknown_batch_is_not_found(self, client: openai.OpenAI) -> None:
        with pytest.raises(openai.NotFoundError):
            client.vector_stores.file_batches.retrieve("vsfb_nope", vector_store_id="vs_1")
