"""Batches that progress, complete, expire and fail on a schedule the test sets, on a manual clock."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from airflow_psopenai.testing import ApiError, BatchSchedule, ManualClock, OpenAIEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def admin(emulator: OpenAIEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{emulator.base_url}/_emulator", timeout=10) as client:
        yield client


def test_without_a_schedule_a_batch_stays_in_progress_with_every_request_done(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    batch = emulator.create_batch()
    clock.advance(3600)
    shown = api.get(f"/v1/batches/{batch['id']}").json()
    assert (shown["status"], shown["request_counts"]["completed"]) == ("in_progress", 100)


def test_a_scheduled_batch_progresses_evenly_then_completes_through_finalizing(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    created = clock()
    batch = emulator.create_batch(schedule=BatchSchedule(complete_after=100, finalize_seconds=10))
    path = f"/v1/batches/{batch['id']}"

    clock.advance(40)
    assert (api.get(path).json()["status"], api.get(path).json()["request_counts"]["completed"]) == ("in_progress", 40)
    clock.advance(65)
    finalizing = api.get(path).json()
    assert (finalizing["status"], finalizing["finalizing_at"]) == ("finalizing", int(created + 100))
    clock.advance(10)
    completed = api.get(path).json()
    assert completed["status"] == "completed"
    assert completed["completed_at"] == int(created + 110)  # when it happened, not when it was read
    assert completed["request_counts"] == {"total": 100, "completed": 100, "failed": 0}
    assert completed["output_file_id"] is not None
    assert [status for _, status in emulator.status_history(batch["id"])] == ["in_progress", "finalizing", "completed"]


def test_the_default_schedule_applies_to_batches_created_afterwards_the_api_s_too(
    emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock
) -> None:
    before = emulator.create_batch()
    emulator.batch_schedule = BatchSchedule(complete_after=5)
    created = api.post(
        "/v1/batches", json={"input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    ).json()
    own = emulator.create_batch(schedule=BatchSchedule(complete_after=50))
    clock.advance(6)
    assert emulator.get_batch(created["id"])["status"] == "completed"
    assert emulator.get_batch(own["id"])["status"] == "in_progress"  # its own schedule
    assert emulator.get_batch(before["id"])["status"] == "in_progress"  # created before the default


def test_a_scheduled_batch_not_done_within_its_window_expires_with_the_requests_it_did(
    emulator: OpenAIEmulator, clock: ManualClock
) -> None:
    created = clock()
    batch = emulator.create_batch(schedule=BatchSchedule(complete_after=200, window_seconds=50))
    clock.advance(60)
    expired = emulator.get_batch(batch["id"])
    assert (expired["status"], expired["expired_at"], expired["expires_at"]) == (
        "expired",
        int(created + 50),
        int(created + 50),
    )
    assert expired["request_counts"]["completed"] == 25


def test_a_scheduled_batch_created_validating_starts_after_its_validation(
    emulator: OpenAIEmulator, clock: ManualClock
) -> None:
    created = clock()
    batch = emulator.create_batch("validating", schedule=BatchSchedule(complete_after=10, validate_seconds=5))
    clock.advance(4)
    assert emulator.get_batch(batch["id"])["status"] == "validating"
    clock.advance(2)
    assert emulator.get_batch(batch["id"])["in_progress_at"] == int(created + 5)
    clock.advance(10)
    assert emulator.get_batch(batch["id"])["status"] == "completed"


def test_a_cancel_stops_the_schedule(emulator: OpenAIEmulator, api: httpx.Client, clock: ManualClock) -> None:
    batch = emulator.create_batch(schedule=BatchSchedule(complete_after=10))
    clock.advance(5)
    assert api.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    clock.advance(20)
    cancelled = emulator.get_batch(batch["id"])
    assert (cancelled["status"], cancelled["request_counts"]["completed"]) == ("cancelled", 50)


def test_a_batch_fails_on_demand_and_only_while_it_runs(emulator: OpenAIEmulator, clock: ManualClock) -> None:
    batch = emulator.create_batch(schedule=BatchSchedule(complete_after=10))
    clock.advance(3)
    failed = emulator.fail_batch(batch["id"])
    assert (failed["status"], failed["request_counts"]["completed"], failed["failed_at"]) == (
        "failed",
        30,
        int(clock()),
    )
    clock.advance(20)
    assert emulator.get_batch(batch["id"])["status"] == "failed"
    with pytest.raises(ApiError, match="Cannot fail a batch with status 'failed'"):
        emulator.fail_batch(batch["id"])


def test_a_schedule_refuses_seconds_that_are_no_duration() -> None:
    with pytest.raises(ValueError, match="complete_after must be a finite number of seconds >= 0"):
        BatchSchedule(complete_after=-1)
    with pytest.raises(ValueError, match="window_seconds"):
        BatchSchedule(window_seconds=float("inf"))


def test_the_admin_api_sets_the_default_schedule_a_batch_s_own_and_fails_a_batch(
    emulator: OpenAIEmulator, admin: httpx.Client, clock: ManualClock
) -> None:
    assert admin.get("/batch_schedule").json() is None
    assert admin.post("/batch_schedule", json={"complete_after": 5}).json() == {
        "complete_after": 5,
        "finalize_seconds": 0.0,
        "validate_seconds": 0.0,
        "window_seconds": 86400,
    }
    scheduled = admin.post("/batches", json={}).json()
    own = admin.post("/batches", json={"schedule": {"complete_after": 100}}).json()
    to_fail = admin.post("/batches", json={}).json()
    assert admin.post(f"/batches/{to_fail['id']}/fail").json()["status"] == "failed"
    clock.advance(6)
    assert emulator.get_batch(scheduled["id"])["status"] == "completed"
    assert emulator.get_batch(own["id"])["status"] == "in_progress"
    assert admin.delete("/batch_schedule").status_code == 200
    assert emulator.batch_schedule is None
    assert admin.post("/batch_schedule", json={"complete_after": "soon"}).status_code == 400
    assert admin.post(f"/batches/{to_fail['id']}/fail").status_code == 409
