"""IDs go into the path as one percent-encoded segment; IDs that cannot be right are refused before any request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.exceptions import PSOpenAINotFoundError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.resources import BATCH, RESPONSE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_psopenai.testing import OpenAIEmulator

pytestmark = pytest.mark.timeout(30)

# ID -> its single path segment as it must reach the server.
ENCODED_IDS = {
    "batch/../files": "batch%2F..%2Ffiles",
    "a/b": "a%2Fb",
    "a?limit=1": "a%3Flimit%3D1",
    "a#frag": "a%23frag",
    "..": "%2E%2E",
    ".": "%2E",
    "../../models": "..%2F..%2Fmodels",
    "batch 1": "batch%201",
    "bätch_ü€": "b%C3%A4tch_%C3%BC%E2%82%AC",
    "100%": "100%25",
    "%2F": "%252F",
    "a;b&c=d": "a%3Bb%26c%3Dd",
}


@pytest.mark.parametrize("batch_id", list(ENCODED_IDS))
def test_unknown_id_is_sent_as_one_encoded_segment_and_answered_404(emulator: OpenAIEmulator, batch_id: str) -> None:
    hook = PSOpenAIHook()
    with pytest.raises(PSOpenAINotFoundError) as raised:
        hook.get_batch(batch_id)
    with pytest.raises(PSOpenAINotFoundError):
        hook.cancel_batch(batch_id)
    get, cancel = emulator.journal
    assert get.raw_target == f"/v1/batches/{ENCODED_IDS[batch_id]}"
    assert cancel.raw_target == f"/v1/batches/{ENCODED_IDS[batch_id]}/cancel"
    assert get.path == f"/v1/batches/{batch_id}"
    # The emulator's own 404 for that literal ID, not "Invalid URL" for another path.
    assert raised.value.api_message == f"No batch found with id '{batch_id}'."


@pytest.mark.parametrize("batch_id", list(ENCODED_IDS))
def test_existing_object_with_such_an_id_is_found_and_cancelled(emulator: OpenAIEmulator, batch_id: str) -> None:
    emulator.create_batch(batch_id=batch_id)
    hook = PSOpenAIHook()
    assert hook.get_batch(batch_id)["id"] == batch_id
    assert hook.cancel_batch(batch_id)["status"] == "cancelling"
    assert emulator.get_batch(batch_id)["status"] in ("cancelling", "cancelled")
    assert [entry.raw_target for entry in emulator.journal] == [
        f"/v1/batches/{ENCODED_IDS[batch_id]}",
        f"/v1/batches/{ENCODED_IDS[batch_id]}/cancel",
    ]


def test_thread_run_ids_are_each_one_encoded_segment(emulator: OpenAIEmulator) -> None:
    run = emulator.create_thread_run(thread_id="thread/..", run_id="run?x#y")
    hook = PSOpenAIHook()
    assert hook.get_thread_run("thread/..", "run?x#y")["id"] == run["id"]
    assert hook.cancel_thread_run("thread/..", "run?x#y")["status"] == "cancelling"
    with pytest.raises(PSOpenAINotFoundError) as raised:
        hook.get_thread_run("..", "..")
    assert [entry.raw_target for entry in emulator.journal] == [
        "/v1/threads/thread%2F../runs/run%3Fx%23y",
        "/v1/threads/thread%2F../runs/run%3Fx%23y/cancel",
        "/v1/threads/%2E%2E/runs/%2E%2E",
    ]
    assert raised.value.api_message == "No thread found with id '..'."


def test_surrounding_white_space_is_dropped_from_an_id(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    assert PSOpenAIHook().get_batch(f"  {batch['id']}\n")["id"] == batch["id"]
    assert emulator.journal[0].raw_target == f"/v1/batches/{batch['id']}"


def test_generic_calls_encode_ids_of_every_resource(emulator: OpenAIEmulator) -> None:
    emulator.create_response(response_id="resp/1")
    hook = PSOpenAIHook()
    assert hook.get_object(RESPONSE, {"response_id": "resp/1"})["id"] == "resp/1"
    assert hook.cancel_object(RESPONSE, {"response_id": "resp/1"})["status"] == "cancelled"
    assert [entry.raw_target for entry in emulator.journal] == [
        "/v1/responses/resp%2F1",
        "/v1/responses/resp%2F1/cancel",
    ]


# -- refused IDs ------------------------------------------------------------------------------------------


REFUSED: dict[str, tuple[object, str]] = {
    "none": (None, "is None"),
    "string-None": ("None", "string 'None'"),
    "empty": ("", "is empty"),
    "blank": ("  \n", "is empty"),
    "int": (42, "must be a string ID, got int 42"),
    "list": (["a"], "rendered to a list"),
    "list-as-text": ('["a", "b"]', "rendered to a list"),
    "tuple": (("a",), "rendered to a tuple"),
    "dict": ({"id": "batch_1"}, "rendered to a dict"),
}


def _sync_calls() -> dict[str, tuple[Callable[[PSOpenAIHook, object], object], str]]:
    return {
        "get_batch": (lambda hook, bad: hook.get_batch(bad), "batch_id"),  # type: ignore[arg-type]
        "cancel_batch": (lambda hook, bad: hook.cancel_batch(bad), "batch_id"),  # type: ignore[arg-type]
        "get_thread_run-thread": (lambda hook, bad: hook.get_thread_run(bad, "run_1"), "thread_id"),  # type: ignore[arg-type]
        "get_thread_run-run": (lambda hook, bad: hook.get_thread_run("thread_1", bad), "run_id"),  # type: ignore[arg-type]
        "cancel_thread_run-thread": (lambda hook, bad: hook.cancel_thread_run(bad, "run_1"), "thread_id"),  # type: ignore[arg-type]
        "cancel_thread_run-run": (lambda hook, bad: hook.cancel_thread_run("thread_1", bad), "run_id"),  # type: ignore[arg-type]
        "get_object": (lambda hook, bad: hook.get_object(BATCH, {"batch_id": bad}), "batch_id"),
        "create_batch": (lambda hook, bad: hook.create_batch(bad), "input_file_id"),  # type: ignore[arg-type]
    }


def _async_calls() -> dict[str, tuple[Callable[[PSOpenAIHook, object], Awaitable[Any]], str]]:
    return {
        "aget_batch": (lambda hook, bad: hook.aget_batch(bad), "batch_id"),  # type: ignore[arg-type]
        "acancel_batch": (lambda hook, bad: hook.acancel_batch(bad), "batch_id"),  # type: ignore[arg-type]
        "aget_thread_run-thread": (lambda hook, bad: hook.aget_thread_run(bad, "run_1"), "thread_id"),  # type: ignore[arg-type]
        "aget_thread_run-run": (lambda hook, bad: hook.aget_thread_run("thread_1", bad), "run_id"),  # type: ignore[arg-type]
        "acancel_thread_run-thread": (lambda hook, bad: hook.acancel_thread_run(bad, "run_1"), "thread_id"),  # type: ignore[arg-type]
        "acancel_thread_run-run": (lambda hook, bad: hook.acancel_thread_run("thread_1", bad), "run_id"),  # type: ignore[arg-type]
    }


SYNC_CALLS = _sync_calls()
ASYNC_CALLS = _async_calls()


@pytest.mark.parametrize("bad", list(REFUSED))
@pytest.mark.parametrize("call", list(SYNC_CALLS))
def test_sync_call_refuses_bad_id_without_a_request(emulator: OpenAIEmulator, call: str, bad: str) -> None:
    function, argument = SYNC_CALLS[call]
    value, words = REFUSED[bad]
    with pytest.raises(ValueError) as raised:
        function(PSOpenAIHook(), value)
    message = str(raised.value)
    assert message.startswith(argument)
    assert words in message
    assert emulator.journal == []


@pytest.mark.parametrize("bad", list(REFUSED))
@pytest.mark.parametrize("call", list(ASYNC_CALLS))
async def test_async_call_refuses_bad_id_without_a_request(
    emulator: OpenAIEmulator, shared_pool: None, call: str, bad: str
) -> None:
    function, argument = ASYNC_CALLS[call]
    value, words = REFUSED[bad]
    with pytest.raises(ValueError) as raised:
        await function(PSOpenAIHook(), value)
    message = str(raised.value)
    assert message.startswith(argument)
    assert words in message
    assert emulator.journal == []
