"""cancel_one on a fake hook: what it sends and what it decides, without a server (the table in
tests/operators/test_cancel_table.py runs it through both operators against the emulator)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_psopenai.cancelling.cancel import Action, CancelPolicy, cancel_one
from airflow_psopenai.client.deadline import NO_DEADLINE, Deadline
from airflow_psopenai.exceptions import PSOpenAICannotCancelError, PSOpenAITransportError
from airflow_psopenai.resources import THREAD_RUN

IDS = {"thread_id": "thread_1", "run_id": "run_1"}
RUN_STARTED = 1_750_000_000.0


class FakeHook:
    """Answers looks with ``looks`` in turn and the cancel with ``cancel`` (an object or an error); records calls."""

    def __init__(self, looks: list[dict[str, Any]], cancel: dict[str, Any] | Exception) -> None:
        self.looks = list(looks)
        self.cancel = cancel
        self.calls: list[tuple[str, Deadline]] = []

    async def aget_object(self, resource: Any, ids: Any, *, deadline: Deadline) -> dict[str, Any]:
        self.calls.append(("GET", deadline))
        return self.looks.pop(0)

    async def acancel_object(self, resource: Any, ids: Any, *, deadline: Deadline) -> dict[str, Any]:
        self.calls.append(("POST", deadline))
        if isinstance(self.cancel, Exception):
            raise self.cancel
        return self.cancel


def refusal(status: str) -> PSOpenAICannotCancelError:
    return PSOpenAICannotCancelError(
        f'Cannot cancel thread run with status "{status}": refused.', status=status, ids=IDS
    )


def run(hook: FakeHook, policy: CancelPolicy, deadline: Deadline = NO_DEADLINE) -> Any:
    return asyncio.run(cancel_one(hook, THREAD_RUN, IDS, policy, deadline=deadline))  # type: ignore[arg-type]


def test_a_forced_try_run_again_takes_the_refusal_of_its_own_cancel_as_done() -> None:
    mine = {"status": "cancelled", "cancelled_at": RUN_STARTED + 5}
    hook = FakeHook([mine], refusal("cancelled"))
    result = run(hook, CancelPolicy(force=True, if_not_cancellable="fail", run_started_at=RUN_STARTED))
    assert (result.action, result.obj, result.error) == (Action.ALREADY_REQUESTED, mine, None)
    assert [method for method, _ in hook.calls] == ["POST", "GET"]
    assert "no second cancel" in result.message


def test_a_refusal_of_another_cancel_follows_if_not_cancellable() -> None:
    theirs = {"status": "cancelled", "cancelled_at": RUN_STARTED - 5}
    hook = FakeHook([theirs], refusal("cancelled"))
    result = run(hook, CancelPolicy(force=True, if_not_cancellable="succeed", run_started_at=RUN_STARTED))
    assert (result.action, result.obj) == (Action.NOT_CANCELLABLE, theirs)
    assert result.message.endswith("Nothing to cancel (if_not_cancellable='succeed').")


@pytest.mark.parametrize(("if_not_cancellable", "looks_again"), [("fail", False), ("succeed", True), ("skip", True)])
def test_a_refusal_naming_a_settled_status_is_looked_into_only_when_the_object_is_handed_on(
    if_not_cancellable: str, looks_again: bool
) -> None:
    error = refusal("completed")
    hook = FakeHook([{"status": "completed"}], error)
    result = run(hook, CancelPolicy(force=True, if_not_cancellable=if_not_cancellable))  # type: ignore[arg-type]
    assert [method for method, _ in hook.calls] == ["POST", "GET"] if looks_again else ["POST"]
    if if_not_cancellable == "fail":
        assert (result.action, result.error) == (Action.FAILED, error)  # the API's own refusal, as it is
    else:
        assert result.action is Action.NOT_CANCELLABLE


def test_a_status_found_by_the_look_fails_with_advice_and_sends_nothing() -> None:
    hook = FakeHook([{"status": "completed"}], {"status": "cancelling"})
    result = run(hook, CancelPolicy(if_not_cancellable="fail"))
    assert result.action is Action.FAILED
    assert isinstance(result.error, PSOpenAICannotCancelError)
    assert str(result.error) == result.message
    assert result.message.startswith("Cannot cancel run with status \"completed\": run 'run_1' of thread 'thread_1'.")
    assert "Use force=True" in result.message
    assert [method for method, _ in hook.calls] == ["GET"]


def test_an_error_of_a_request_is_a_failure_not_an_exception() -> None:
    error = PSOpenAITransportError("no answer")
    hook = FakeHook([{"status": "in_progress"}], error)
    result = run(hook, CancelPolicy())
    assert (result.action, result.found, result.error) == (Action.FAILED, "in_progress", error)


def test_every_request_gets_the_deadline_and_none_starts_after_it() -> None:
    deadline = Deadline.after(60)
    hook = FakeHook([{"status": "in_progress"}], {"status": "cancelling"})
    assert run(hook, CancelPolicy(), deadline).action is Action.SENT
    assert hook.calls == [("GET", deadline), ("POST", deadline)]

    hook = FakeHook([{"status": "in_progress"}], {"status": "cancelling"})
    result = run(hook, CancelPolicy(), Deadline(0.0))
    assert (result.action, hook.calls) == (Action.NOT_ATTEMPTED, [])
    assert result.message.startswith("its cancel was not sent: ")
    assert "deadline had passed" in str(result.error)
