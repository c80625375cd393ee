"""Status machines of batches, thread runs and responses, driven over HTTP on a manual clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.resources import ASSISTANTS_BETA_HEADERS as BETA
from airflow_psopenai.resources import BATCH, RESPONSE, THREAD_RUN
from airflow_psopenai.testing import ApiError, ManualClock, OpenAIEmulator
from airflow_psopenai.testing.objects import BATCH_REQUESTS_PER_SECOND

if TYPE_CHECKING:
    import httpx


def error_of(response: httpx.Response) -> dict[str, object]:
    error = response.json()["error"]
    assert isinstance(error, dict)
    return error


def run_path(run: dict[str, object]) -> str:
    return f"/v1/threads/{run['thread_id']}/runs/{run['id']}"


class TestBatch:
    def test_cancel_goes_through_cancelling_to_cancelled_after_the_delay(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        created = clock()
        batch = emulator.create_batch()
        clock.advance(2)

        cancelling = api.post(f"/v1/batches/{batch['id']}/cancel").json()
        assert cancelling["status"] == "cancelling"
        assert cancelling["cancelling_at"] == int(created + 2)
        assert cancelling["cancelled_at"] is None

        clock.advance(4.9)
        assert api.get(f"/v1/batches/{batch['id']}").json()["status"] == "cancelling"
        clock.advance(0.2)
        cancelled = api.get(f"/v1/batches/{batch['id']}").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["cancelled_at"] == int(created + 7)
        assert cancelled["error_file_id"] is None
        assert emulator.status_history(batch["id"]) == [
            (created, "in_progress"),
            (created + 2, "cancelling"),
            (created + 7, "cancelled"),
        ]

    def test_history_records_when_the_cancel_settled_not_when_it_was_read(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        batch = emulator.create_batch()
        api.post(f"/v1/batches/{batch['id']}/cancel")
        clock.advance(60)
        assert emulator.status_history(batch["id"])[-1] == (clock() - 55, "cancelled")

    def test_a_cancel_can_race_to_completed(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        batch = emulator.create_batch(race_to="completed", total_requests=40)
        assert api.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
        clock.advance(5)
        completed = api.get(f"/v1/batches/{batch['id']}").json()
        assert completed["status"] == "completed"
        assert completed["completed_at"] == int(clock())
        assert completed["cancelled_at"] is None
        assert completed["output_file_id"].startswith("file-")
        assert completed["request_counts"] == {"total": 40, "completed": 40, "failed": 0}
        assert [status for _, status in emulator.status_history(batch["id"])] == [
            "in_progress",
            "cancelling",
            "completed",
        ]

    @pytest.mark.parametrize("end", ["failed", "expired"])
    def test_a_cancel_can_race_to_other_ends(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, end: str
    ) -> None:
        batch = emulator.create_batch(race_to=end)
        api.post(f"/v1/batches/{batch['id']}/cancel")
        clock.advance(5)
        settled = api.get(f"/v1/batches/{batch['id']}").json()
        assert settled["status"] == end
        assert settled[f"{end}_at"] == int(clock())

    def test_request_counts_grow_while_in_progress_and_freeze_at_the_cancel(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        batch = emulator.create_batch(total_requests=1000)
        assert batch["request_counts"] == {"total": 1000, "completed": 0, "failed": 0}
        clock.advance(2)
        counts = api.get(f"/v1/batches/{batch['id']}").json()["request_counts"]
        assert counts["completed"] == 2 * BATCH_REQUESTS_PER_SECOND

        api.post(f"/v1/batches/{batch['id']}/cancel")
        clock.advance(30)
        cancelled = api.get(f"/v1/batches/{batch['id']}").json()
        assert cancelled["request_counts"] == counts
        # Partial results of a cancelled batch.
        assert cancelled["output_file_id"].startswith("file-")

    def test_request_counts_stop_at_the_total(self, emulator: OpenAIEmulator, clock: ManualClock) -> None:
        batch = emulator.create_batch(total_requests=3)
        clock.advance(3600)
        assert emulator.get_batch(batch["id"])["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
        assert emulator.get_batch(batch["id"])["status"] == "in_progress"

    def test_a_batch_cancelled_before_any_request_has_no_output_file(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        batch = emulator.create_batch("validating")
        api.post(f"/v1/batches/{batch['id']}/cancel")
        clock.advance(5)
        cancelled = api.get(f"/v1/batches/{batch['id']}").json()
        assert cancelled["status"] == "cancelled"
        assert cancelled["output_file_id"] is None
        assert cancelled["request_counts"] == {"total": 0, "completed": 0, "failed": 0}

    @pytest.mark.parametrize("status", sorted(BATCH.settled - {"cancelled"}))
    def test_cancel_of_a_batch_that_ended_is_409(
        self, emulator: OpenAIEmulator, api: httpx.Client, status: str
    ) -> None:
        batch = emulator.create_batch(status)
        response = api.post(f"/v1/batches/{batch['id']}/cancel")
        assert response.status_code == 409
        assert error_of(response) == {
            "message": f"Cannot cancel a batch with status '{status}'.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
        assert emulator.get_batch(batch["id"])["status"] == status

    @pytest.mark.parametrize("status", ["cancelling", "cancelled"])
    def test_cancel_of_a_batch_being_or_already_cancelled_is_allowed_and_changes_nothing(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, status: str
    ) -> None:
        batch = emulator.create_batch(status)
        clock.advance(1)
        response = api.post(f"/v1/batches/{batch['id']}/cancel")
        assert response.status_code == 200
        assert response.json() == batch
        assert len(emulator.status_history(batch["id"])) == 1

    @pytest.mark.parametrize("status", sorted(BATCH.cancellable))
    def test_each_cancellable_status_cancels(self, emulator: OpenAIEmulator, api: httpx.Client, status: str) -> None:
        batch = emulator.create_batch(status)
        assert api.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"

    def test_created_cancelling_settles_after_the_delay(self, emulator: OpenAIEmulator, clock: ManualClock) -> None:
        batch = emulator.create_batch("cancelling")
        assert batch["cancelling_at"] == batch["created_at"]
        clock.advance(5)
        assert emulator.get_batch(batch["id"])["status"] == "cancelled"

    def test_a_new_cancel_delay_applies_to_later_cancels(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        first, second = emulator.create_batch(), emulator.create_batch()
        api.post(f"/v1/batches/{first['id']}/cancel")
        emulator.cancel_delay = 1
        api.post(f"/v1/batches/{second['id']}/cancel")
        clock.advance(1)
        assert emulator.get_batch(first["id"])["status"] == "cancelling"
        assert emulator.get_batch(second["id"])["status"] == "cancelled"

    def test_unknown_batch_is_404(self, api: httpx.Client) -> None:
        for response in (api.get("/v1/batches/batch_nope"), api.post("/v1/batches/batch_nope/cancel")):
            assert response.status_code == 404
            assert error_of(response)["message"] == "No batch found with id 'batch_nope'."

    def test_list_is_newest_first_with_a_cursor(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        ids = []
        for _ in range(5):
            ids.append(emulator.create_batch()["id"])
            clock.advance(1)
        newest_first = ids[::-1]

        page = api.get("/v1/batches", params={"limit": 2}).json()
        assert [batch["id"] for batch in page["data"]] == newest_first[:2]
        assert (page["object"], page["first_id"], page["last_id"], page["has_more"]) == (
            "list",
            newest_first[0],
            newest_first[1],
            True,
        )
        page = api.get("/v1/batches", params={"limit": 2, "after": page["last_id"]}).json()
        assert [batch["id"] for batch in page["data"]] == newest_first[2:4]
        page = api.get("/v1/batches", params={"limit": 2, "after": page["last_id"]}).json()
        assert [batch["id"] for batch in page["data"]] == newest_first[4:]
        assert page["has_more"] is False
        assert [batch["id"] for batch in api.get("/v1/batches").json()["data"]] == newest_first

    def test_list_shows_settled_statuses(self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock) -> None:
        batch = emulator.create_batch("cancelling")
        clock.advance(5)
        assert api.get("/v1/batches").json()["data"][0]["status"] == "cancelled"
        assert emulator.status_history(batch["id"])[-1][1] == "cancelled"

    @pytest.mark.parametrize(
        ("limit", "code"), [("0", "integer_below_min_value"), ("101", "integer_above_max_value"), ("x", "invalid_type")]
    )
    def test_list_rejects_a_bad_limit(self, api: httpx.Client, limit: str, code: str) -> None:
        response = api.get("/v1/batches", params={"limit": limit})
        assert response.status_code == 400
        assert (error_of(response)["param"], error_of(response)["code"]) == ("limit", code)

    def test_create_over_http(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        body = {
            "input_file_id": "file-abc",
            "endpoint": "/v1/responses",
            "completion_window": "24h",
            "metadata": {"team": "data"},
        }
        batch = api.post("/v1/batches", json=body).json()
        assert {name: batch[name] for name in body} == body
        assert batch["status"] == "in_progress"
        assert emulator.get_batch(batch["id"]) == batch

    @pytest.mark.parametrize("missing", ["input_file_id", "endpoint", "completion_window"])
    def test_create_names_a_missing_parameter(self, api: httpx.Client, missing: str) -> None:
        body = {"input_file_id": "file-abc", "endpoint": "/v1/responses", "completion_window": "24h"}
        del body[missing]
        response = api.post("/v1/batches", json=body)
        assert response.status_code == 400
        assert error_of(response) == {
            "message": f"Missing required parameter: '{missing}'.",
            "type": "invalid_request_error",
            "param": missing,
            "code": "missing_required_parameter",
        }

    @pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"input_file_id": "f", "endpoint": 1}'])
    def test_create_rejects_a_bad_body(self, api: httpx.Client, content: bytes) -> None:
        response = api.post("/v1/batches", content=content)
        assert response.status_code == 400
        assert error_of(response)["type"] == "invalid_request_error"


class TestThreadRun:
    def test_cancel_goes_through_cancelling_to_cancelled(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        run = emulator.create_thread_run()
        cancelling = api.post(run_path(run) + "/cancel", headers=BETA).json()
        assert (cancelling["status"], cancelling["cancelled_at"]) == ("cancelling", None)
        clock.advance(5)
        cancelled = api.get(run_path(run), headers=BETA).json()
        assert (cancelled["status"], cancelled["cancelled_at"]) == ("cancelled", int(clock()))
        assert cancelled["expires_at"] is None
        assert [status for _, status in emulator.status_history(run["id"])] == [
            "in_progress",
            "cancelling",
            "cancelled",
        ]

    @pytest.mark.parametrize("end", sorted(THREAD_RUN.settled - {"cancelled"}))
    def test_a_cancel_can_race_to_another_end(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, end: str
    ) -> None:
        run = emulator.create_thread_run(race_to=end)
        api.post(run_path(run) + "/cancel", headers=BETA)
        clock.advance(5)
        settled = api.get(run_path(run), headers=BETA).json()
        assert settled["status"] == end
        assert settled["cancelled_at"] is None

    def test_requires_action_shows_the_tool_calls_until_cancelled(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
    ) -> None:
        run = emulator.create_thread_run("requires_action")
        assert run["required_action"]["type"] == "submit_tool_outputs"
        api.post(run_path(run) + "/cancel", headers=BETA)
        clock.advance(5)
        assert api.get(run_path(run), headers=BETA).json()["required_action"] is None

    @pytest.mark.parametrize("status", sorted(THREAD_RUN.statuses - THREAD_RUN.cancellable))
    def test_cancel_in_any_other_status_is_400(self, emulator: OpenAIEmulator, api: httpx.Client, status: str) -> None:
        run = emulator.create_thread_run(status)
        response = api.post(run_path(run) + "/cancel", headers=BETA)
        assert response.status_code == 400
        assert error_of(response) == {
            "message": f"Cannot cancel run with status '{status}'.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }

    def test_runs_share_a_given_thread(self, emulator: OpenAIEmulator) -> None:
        first = emulator.create_thread_run(thread_id="thread_shared")
        second = emulator.create_thread_run(thread_id="thread_shared")
        assert emulator.get_thread_run("thread_shared", first["id"])["thread_id"] == "thread_shared"
        assert emulator.get_thread_run("thread_shared", second["id"])["id"] == second["id"]

    def test_unknown_thread_and_unknown_run_are_404(self, emulator: OpenAIEmulator, api: httpx.Client) -> None:
        run = emulator.create_thread_run()
        response = api.get(f"/v1/threads/thread_nope/runs/{run['id']}", headers=BETA)
        assert (response.status_code, error_of(response)["message"]) == (404, "No thread found with id 'thread_nope'.")
        response = api.post(f"/v1/threads/{run['thread_id']}/runs/run_nope/cancel", headers=BETA)
        assert (response.status_code, error_of(response)["message"]) == (404, "No run found with id 'run_nope'.")


class TestResponse:
    @pytest.mark.parametrize("status", sorted(RESPONSE.cancellable))
    def test_cancel_is_immediate_and_idempotent(
        self, emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock, status: str
    ) -> None:
        response = emulator.create_response(status)
        clock.advance(1)
        assert api.post(f"/v1/responses/{response['id']}/cancel").json()["status"] == "cancelled"
        again = api.post(f"/v1/responses/{response['id']}/cancel")
        assert (again.status_code, again.json()["status"]) == (200, "cancelled")
        assert emulator.status_history(response["id"]) == [(clock() - 1, status), (clock(), "cancelled")]

    def test_cancel_of_a_response_not_in_the_background_is_404(
        self, emulator: OpenAIEmulator, api: httpx.Client
    ) -> None:
        response = emulator.create_response(background=False)
        answer = api.post(f"/v1/responses/{response['id']}/cancel")
        assert answer.status_code == 404
        assert emulator.get_response(response["id"])["status"] == "in_progress"

    @pytest.mark.parametrize("status", sorted(RESPONSE.settled - {"cancelled"}))
    def test_cancel_of_a_response_that_ended_is_400(
        self, emulator: OpenAIEmulator, api: httpx.Client, status: str
    ) -> None:
        response = emulator.create_response(status)
        answer = api.post(f"/v1/responses/{response['id']}/cancel")
        assert (answer.status_code, error_of(answer)["message"]) == (400, f"Cannot cancel a {status} response.")

    def test_unknown_response_is_404(self, api: httpx.Client) -> None:
        answer = api.get("/v1/responses/resp_nope")
        assert (answer.status_code, error_of(answer)["message"]) == (404, "Response with id 'resp_nope' not found.")


class TestPythonApi:
    def test_rejects_unknown_statuses_and_ends(self, emulator: OpenAIEmulator) -> None:
        with pytest.raises(ValueError, match="Unknown batch status"):
            emulator.create_batch("queued")
        with pytest.raises(ValueError, match="race_to"):
            emulator.create_batch(race_to="cancelled")
        with pytest.raises(ValueError, match="race_to"):
            emulator.create_thread_run(race_to="requires_action")
        with pytest.raises(ValueError, match="Unknown response status"):
            emulator.create_response("cancelling")

    def test_rejects_an_id_already_used(self, emulator: OpenAIEmulator) -> None:
        emulator.create_batch(batch_id="same")
        with pytest.raises(ValueError, match="already exists"):
            emulator.create_response(response_id="same")

    def test_unknown_ids_raise_api_errors(self, emulator: OpenAIEmulator) -> None:
        with pytest.raises(ApiError, match="No batch found") as caught:
            emulator.get_batch("nope")
        assert caught.value.status == 404
        with pytest.raises(ApiError):
            emulator.status_history("nope")

    def test_reset_forgets_objects(self, emulator: OpenAIEmulator) -> None:
        batch = emulator.create_batch()
        emulator.reset()
        with pytest.raises(ApiError):
            emulator.get_batch(batch["id"])

    def test_rejects_bad_settings(self, emulator: OpenAIEmulator) -> None:
        with pytest.raises(ValueError, match="cancel_delay"):
            emulator.cancel_delay = -1
        with pytest.raises(ValueError, match="latency"):
            emulator.latency = float("inf")
