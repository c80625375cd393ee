"""The "OpenAI Batch" extra link, and that every path the provider info names exists."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from airflow_psopenai.get_provider_info import get_provider_info
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.operators import (
    StopBatchOperator,
    StopEvalRunOperator,
    StopFineTuningJobOperator,
    StopThreadRunOperator,
)
from airflow_psopenai.operators.stop import CONSOLE_URL_XCOM_KEY, OpenAIBatchLink, OpenAIFineTuningJobLink

if TYPE_CHECKING:
    from collections.abc import Callable

    import pytest

    from airflow_psopenai.testing import OpenAIEmulator
    from tests.conftest import DagRunResult


class RecordingTaskInstance:
    """Collects what a task pushes to XCom."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def pushed_console_url(
    operator: StopBatchOperator | StopThreadRunOperator, hook: PSOpenAIHook, ids: dict[str, str]
) -> Any:
    ti = RecordingTaskInstance()
    operator._push_console_url({"ti": ti}, hook, ids)  # type: ignore[arg-type]
    return ti.pushed.get(CONSOLE_URL_XCOM_KEY, "")  # execute has pushed "" before, whatever happens next


def test_console_url_pushed_for_api_openai_com(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-link")  # default connection missing: PSOpenAI's fallback
    operator = StopBatchOperator(task_id="stop", batch_id="batch_abc")
    url = pushed_console_url(operator, PSOpenAIHook(), {"batch_id": "batch_abc"})
    assert url == "https://platform.openai.com/batches/batch_abc"
    odd = pushed_console_url(operator, PSOpenAIHook(), {"batch_id": "a/../b?c"})
    assert odd == "https://platform.openai.com/batches/a%2F..%2Fb%3Fc"  # the ID never changes the page's path


def test_no_console_url_for_another_api_base_or_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-link")
    batch_operator = StopBatchOperator(task_id="stop", batch_id="b")
    gateway = PSOpenAIHook(api_base="https://gateway.example/v1")
    assert pushed_console_url(batch_operator, gateway, {"batch_id": "b"}) == ""
    run_operator = StopThreadRunOperator(task_id="stop", thread_id="t", run_id="r")
    assert pushed_console_url(run_operator, PSOpenAIHook(), {"thread_id": "t", "run_id": "r"}) == ""


def test_emulator_run_pushes_an_empty_console_url(
    emulator: OpenAIEmulator, run_dag: Callable[..., DagRunResult]
) -> None:
    batch = emulator.create_batch()
    result = run_dag("stop_batch", batch_id=batch["id"])
    assert result.state == "success"
    assert result.xcom("stop", key=CONSOLE_URL_XCOM_KEY) == ""


def test_link_is_attached_to_the_operators_of_objects_with_a_page() -> None:
    assert [link.name for link in StopBatchOperator.operator_extra_links] == ["OpenAI Batch"]
    assert isinstance(StopBatchOperator.operator_extra_links[0], OpenAIBatchLink)
    assert [link.name for link in StopFineTuningJobOperator.operator_extra_links] == ["OpenAI Fine-tuning job"]
    assert isinstance(StopFineTuningJobOperator.operator_extra_links[0], OpenAIFineTuningJobLink)
    assert not StopThreadRunOperator.operator_extra_links
    assert not StopEvalRunOperator.operator_extra_links


def resolve(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_every_path_in_the_provider_info_resolves() -> None:
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    (connection_type,) = info["connection-types"]
    hook_class = resolve(connection_type["hook-class-name"])
    assert hook_class is PSOpenAIHook
    assert connection_type["connection-type"] == PSOpenAIHook.conn_type
    assert [resolve(path) for path in info["extra-links"]] == [OpenAIBatchLink, OpenAIFineTuningJobLink]
