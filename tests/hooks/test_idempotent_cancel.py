"""A cancel whose answer was lost is not sent twice, and never fails because it went through."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from airflow_psopenai.exceptions import PSOpenAICannotCancelError, PSOpenAITransportError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import THREAD_RUN
from airflow_psopenai.testing import Fault
from tests.connections import use_emulator

if TYPE_CHECKING:
    from airflow_psopenai.testing import OpenAIEmulator

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("shared_pool")]

LOST_ANSWERS = [Fault.drop(applied=True), Fault.server_error(502, html=True, applied=True), Fault.hang(3, applied=True)]
LOST_IDS = ["dropped", "gateway 502", "read timeout"]


@pytest.fixture
def run(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    use_emulator(monkeypatch, emulator, timeout_sec=1)  # time enough for the look-ups on a busy machine
    emulator.cancel_delay = 60
    created = emulator.create_thread_run()
    return {"thread_id": str(created["thread_id"]), "run_id": str(created["id"])}


async def cancel(mode: str, ids: dict[str, str], max_retry_count: int = 2) -> dict[str, object]:
    hook = PSOpenAIHook(max_retry_count=max_retry_count)
    if mode == "sync":
        return hook.cancel_object(THREAD_RUN, ids)
    return await hook.acancel_object(THREAD_RUN, ids)


def requests(emulator: OpenAIEmulator) -> list[tuple[str, int | None, bool]]:
    return [(entry.method, entry.status, entry.applied) for entry in emulator.journal]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("fault", LOST_ANSWERS, ids=LOST_IDS)
async def test_a_retry_after_a_lost_answer_looks_before_it_sends_again(
    emulator: OpenAIEmulator, run: dict[str, str], fast_backoff: None, mode: str, fault: Fault
) -> None:
    emulator.add_fault(fault, method="POST")
    cancelled = await cancel(mode, run)
    assert cancelled["status"] == "cancelling"
    assert requests(emulator) == [("POST", 502 if fault.kind == "server_error" else None, True), ("GET", 200, False)]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_answer_lost_before_the_api_acted_is_sent_again(
    emulator: OpenAIEmulator, run: dict[str, str], fast_backoff: None, mode: str
) -> None:
    emulator.add_fault(Fault.drop(), method="POST")  # nothing reached the API
    assert (await cancel(mode, run))["status"] == "cancelling"
    assert requests(emulator) == [("POST", None, False), ("GET", 200, False), ("POST", 200, False)]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_refusal_after_a_lost_answer_is_checked_and_is_success(
    emulator: OpenAIEmulator, run: dict[str, str], fast_backoff: None, mode: str
) -> None:
    """A stale read between the attempts: the resent cancel meets 400 'cannot cancel ... cancelling'."""
    emulator.add_fault(Fault.drop(applied=True), method="POST")
    stale = {**emulator.get_thread_run(run["thread_id"], run["run_id"]), "status": "in_progress"}
    emulator.add_fault(Fault.answer(200, json.dumps(stale)), method="GET")
    assert (await cancel(mode, run))["status"] == "cancelling"
    assert requests(emulator) == [("POST", None, True), ("GET", 200, False), ("POST", 400, False), ("GET", 200, False)]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_refusal_without_a_lost_answer_stays_a_refusal(
    emulator: OpenAIEmulator, run: dict[str, str], mode: str
) -> None:
    """Someone else cancelled it: PSOpenAI's rule, not this provider's idempotency, decides."""
    hook = PSOpenAIHook()
    hook.cancel_object(THREAD_RUN, run)
    with pytest.raises(PSOpenAICannotCancelError) as refused:
        await cancel(mode, run)
    assert refused.value.status == "cancelling"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_lost_answers_without_retries_fail_the_call(
    emulator: OpenAIEmulator, run: dict[str, str], mode: str
) -> None:
    """max_retry_count=0: the task fails, and its Airflow retry takes the cancel as done (operator tests)."""
    emulator.add_fault(Fault.drop(applied=True), method="POST")
    with pytest.raises(PSOpenAITransportError):
        await cancel(mode, run, max_retry_count=0)
