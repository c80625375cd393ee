"""The cancel table: every batch status x force x if_not_cancellable x first try / retry / cancel time in this run,
through StopBatchOperator and StopBatchesOperator in one real DAG run (tests/dags/psopenai_cancel_table_dags.py).

For each case both operators must send the same requests for its batch and reach the same verdict (the
single task's state; the set's line for that batch, and the set task's state from its batches'), and
both must follow PSOpenAI's rule as :func:`expected` writes it out.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_psopenai.cancelling.cancel import Action
from airflow_psopenai.resources import BATCH
from airflow_psopenai.testing import OpenAIEmulator
from tests.conftest import connection_json
from tests.dags.psopenai_cancel_table_dags import CASES, OWN_CANCELS, OWN_CANCELS_TASK, SET, SINGLE, Case

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.conftest import DagRunResult

# Cancels before the run are an hour before it, cancels "in this run" an hour into it: the API's times are
# whole seconds, and no delay of a loaded machine comes near an hour.
HOUR = 3600.0
# Nothing settles by itself during the run: a status stays as the table set it.
NEVER = 10.0**7
# The verdict of a batch of a set, from what its line says was done.
SET_VERDICT = {
    Action.SENT.value: "success",
    Action.ALREADY_REQUESTED.value: "success",
    Action.FAILED.value: "failed",
}
BATCH_LINE = re.compile(r"batch '(?P<id>batch_[a-z_]+)': found [A-Za-z_]+, (?P<action>[^:,]+?)(?:, now |: )")


def expected(case: Case) -> tuple[list[tuple[str, int]], str]:
    """Return PSOpenAI's rule for a case: the requests for its batch (method, answer) and the verdict."""
    looks = not case.force or case.tries == "retry"
    own_cancel = case.status in BATCH.cancel_requested and (case.tries == "retry" or case.cancelled_in_this_run)
    not_cancellable = {"fail": "failed", "succeed": "success", "skip": "skipped"}[case.if_not_cancellable]
    requests = [("GET", 200)] if looks else []
    if looks and own_cancel:
        return requests, "success"
    if looks and not case.force and case.status not in BATCH.cancellable:
        return requests, not_cancellable
    if case.status in BATCH.settled - BATCH.cancel_requested:  # the API refuses: completed, failed, expired
        requests.append(("POST", 409))
        return requests + ([] if case.if_not_cancellable == "fail" else [("GET", 200)]), not_cancellable
    return [*requests, ("POST", 200)], "success"  # the API accepts a cancelling or cancelled batch's cancel


@pytest.fixture
def shifted_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OpenAIEmulator, list[float]]]:
    """An emulator whose clock the test shifts by an hour, and the default connection pointing at it.

    Without the status board, so that a set's looks are GETs as a single task's are (the board's list
    pages have tests of their own).
    """
    shift = [0.0]
    with OpenAIEmulator(cancel_delay=NEVER, clock=lambda: time.time() + shift[0]) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", connection_json(emulator, coalesce_polling=False))
        yield emulator, shift


def test_both_operators_follow_the_same_cancel_table(
    shifted_emulator: tuple[OpenAIEmulator, list[float]],
    run_dag: Callable[..., DagRunResult],
    captured_logs: Callable[[], str],
) -> None:
    emulator, shift = shifted_emulator
    for case in CASES:
        shift[0] = HOUR if case.cancelled_in_this_run else -HOUR
        for operator in (SINGLE, SET):
            emulator.create_batch(status=case.status, batch_id=case.batch_id(operator))
    shift[0] = -HOUR
    for batch_id in OWN_CANCELS:
        emulator.create_batch(status=batch_id.rsplit("_", 1)[1], batch_id=batch_id)
    shift[0] = 0.0

    result = run_dag("cancel_table")

    set_actions = {match["id"]: match["action"] for match in BATCH_LINE.finditer(captured_logs())}
    rows: dict[Case, dict[str, Any]] = {}
    for case in CASES:
        row = rows[case] = {"expected": expected(case)}
        single_index = [c for c in CASES if c.task_id(SINGLE) == case.task_id(SINGLE)].index(case)
        single_verdict = result.task_states[f"{case.task_id(SINGLE)}[{single_index}]"]
        action = set_actions.get(case.batch_id(SET))
        set_verdict = {
            **SET_VERDICT,
            Action.NOT_CANCELLABLE.value: "skipped" if case.if_not_cancellable == "skip" else "success",
        }.get(action or "", f"no line ({action})")
        row[SINGLE] = (requests_for(emulator, case.batch_id(SINGLE)), single_verdict)
        row[SET] = (requests_for(emulator, case.batch_id(SET)), set_verdict)
    wrong = {case: row for case, row in rows.items() if not row["expected"] == row[SINGLE] == row[SET]}
    assert not wrong, "\n".join(f"{case}: {row}" for case, row in wrong.items())
    assert len(CASES) == 2 * 3 * (2 * len(BATCH.statuses) + len(BATCH.cancel_requested))

    # Each set task's own verdict is its batches': failed if one failed, skipped if none could be cancelled.
    for task_id in {case.task_id(SET) for case in CASES}:
        verdicts = [rows[case][SINGLE][1] for case in CASES if case.task_id(SET) == task_id]
        whole = "failed" if "failed" in verdicts else "skipped" if set(verdicts) == {"skipped"} else "success"
        assert result.task_states[task_id] == whole, task_id
    # As a single task does with each: a set whose cancels its own earlier try made succeeds, not skips.
    assert result.task_states[OWN_CANCELS_TASK] == "success"
    assert [requests_for(emulator, batch_id) for batch_id in OWN_CANCELS] == [[("GET", 200)]] * len(OWN_CANCELS)


def requests_for(emulator: OpenAIEmulator, batch_id: str) -> list[tuple[str, int | None]]:
    """Return the requests the emulator received for one batch: (method, answer), in order."""
    return [
        (entry.method, entry.status)
        for entry in emulator.requests()
        if entry.path in (f"/v1/batches/{batch_id}", f"/v1/batches/{batch_id}/cancel")
    ]
