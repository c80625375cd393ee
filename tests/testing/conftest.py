"""Fixtures for the emulator's tests: emulators on a manual clock, clients that check every body against the spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import jsonschema
import pytest

from airflow_psopenai.testing import ManualClock, OpenAIEmulator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SCHEMAS = Path(__file__).parent / "schemas"


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


VALIDATORS = {
    name: _validator(name)
    for name in ("batch", "run", "response", "fine_tuning_job", "eval_run", "vector_store_file_batch", "error")
}
SCHEMA_OF_OBJECT = {
    "batch": "batch",
    "thread.run": "run",
    "response": "response",
    "fine_tuning.job": "fine_tuning_job",
    "eval.run": "eval_run",
    "vector_store.files_batch": "vector_store_file_batch",
}


def check_body(body: object, status: int) -> None:
    """Validate one JSON body the emulator sent against the spec's schema for it."""
    if status >= 400:
        VALIDATORS["error"].validate(body)
        return
    assert isinstance(body, dict)
    if body.get("object") == "list":
        for item in body["data"]:
            check_body(item, status)
        return
    VALIDATORS[SCHEMA_OF_OBJECT[body["object"]]].validate(body)


def check_response(response: httpx.Response) -> None:
    """Validate the body of every JSON answer of the API (not of admin endpoints)."""
    response.read()
    if response.url.path.startswith("/_emulator"):
        return
    assert response.headers["x-request-id"].startswith("req_")
    if response.headers["content-type"] == "application/json":
        check_body(response.json(), response.status_code)


@pytest.fixture
def validate_body() -> Callable[[object, int], None]:
    """Return the function that validates a body against the spec's schema for it."""
    return check_body


@pytest.fixture
def clock() -> ManualClock:
    """Return a clock that moves only when told to."""
    return ManualClock()


@pytest.fixture
def emulator(clock: ManualClock) -> Iterator[OpenAIEmulator]:
    """Yield a running emulator on the manual clock, with a 5 s cancel delay."""
    with OpenAIEmulator(cancel_delay=5.0, clock=clock) as emu:
        yield emu


@pytest.fixture
def api(emulator: OpenAIEmulator) -> Iterator[httpx.Client]:
    """Yield an authenticated client of ``emulator`` that validates every body against the spec."""
    with httpx.Client(
        base_url=emulator.base_url,
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        event_hooks={"response": [check_response]},
        timeout=10,
    ) as client:
        yield client
