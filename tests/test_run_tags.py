"""Which deployment this Airflow is: [psopenai] deployment, else [api] base_url, else 'default'; and how a
batch's deployment tag relates to it."""

from __future__ import annotations

import pytest

from airflow_psopenai.run_tags import (
    DEFAULT_DEPLOYMENT,
    OTHER,
    OURS,
    UNTAGGED,
    deployment,
    deployment_is_default,
    deployment_match,
)

pytestmark = pytest.mark.unit


def test_the_setting_names_the_deployment_before_the_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.staging.example.com/")
    assert deployment() == "https://airflow.staging.example.com"
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "staging")
    assert deployment() == "staging"
    assert not deployment_is_default()


def test_without_either_it_is_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "")
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", " ")
    assert deployment() == DEFAULT_DEPLOYMENT
    assert deployment_is_default()


def test_a_name_longer_than_a_metadata_value_is_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__PSOPENAI__DEPLOYMENT", "x" * 600)
    assert len(deployment()) == 512


def test_a_batch_is_ours_another_deployments_or_untagged() -> None:
    assert deployment_match({"airflow_deployment": "a"}, "a") == OURS
    assert deployment_match({"airflow_deployment": "b"}, "a") == OTHER
    assert deployment_match({"airflow_dag_id": "d"}, "a") == UNTAGGED
    assert deployment_match(None, "a") == UNTAGGED
