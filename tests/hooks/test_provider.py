"""Provider registration: what Airflow's CLI shows, and the connection form's metadata."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest

from airflow_psopenai.get_provider_info import get_provider_info
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import OpenAIEmulator

if TYPE_CHECKING:
    from collections.abc import Iterator

AIRFLOW = Path(sys.executable).with_name("airflow")
WRONG_KEY = "sk-wrong-cli-key-0123456789abcdef"
CLI_COMMANDS = {
    "providers-list": ["providers", "list"],
    "providers-hooks": ["providers", "hooks"],
    "test-good": ["connections", "test", "psopenai_default"],
    "test-bad": ["connections", "test", "psopenai_bad"],
}


class CliRuns:
    def __init__(self, results: dict[str, subprocess.CompletedProcess[str]], emulator: OpenAIEmulator) -> None:
        self.results = results
        self.journal = emulator.journal
        self.api_base = emulator.api_base

    def output(self, name: str) -> str:
        result = self.results[name]
        return result.stdout + result.stderr


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRuns]:
    """Run the CLI commands once, in parallel, in a fresh AIRFLOW_HOME, against one emulator."""
    home = tmp_path_factory.mktemp("airflow-cli-home")
    with OpenAIEmulator() as emulator:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("AIRFLOW", "OPENAI_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW_CONN_PSOPENAI_DEFAULT": json.dumps(
                    {"conn_type": "psopenai", "host": emulator.api_base, "password": emulator.api_key}
                ),
                "AIRFLOW_CONN_PSOPENAI_BAD": json.dumps(
                    {"conn_type": "psopenai", "host": emulator.api_base, "password": WRONG_KEY}
                ),
            }
        )
        processes = {
            name: subprocess.Popen(
                [str(AIRFLOW), *args], env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for name, args in CLI_COMMANDS.items()
        }
        results: dict[str, subprocess.CompletedProcess[str]] = {}
        for name, process in processes.items():
            try:
                stdout, stderr = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        yield CliRuns(results, emulator)


@pytest.mark.timeout(180)
def test_cli_providers_list_shows_the_provider(cli: CliRuns) -> None:
    result = cli.results["providers-list"]
    assert result.returncode == 0, cli.output("providers-list")
    [line] = [line for line in result.stdout.splitlines() if line.startswith("airflow-psopenai ")]
    assert version("airflow-psopenai") in line


@pytest.mark.timeout(180)
def test_cli_providers_hooks_shows_the_psopenai_connection_type(cli: CliRuns) -> None:
    result = cli.results["providers-hooks"]
    assert result.returncode == 0, cli.output("providers-hooks")
    [line] = [line for line in result.stdout.splitlines() if line.startswith("psopenai ")]
    assert "airflow_psopenai.hooks.psopenai.PSOpenAIHook" in line
    assert "airflow-psopenai" in line


@pytest.mark.timeout(180)
def test_cli_connections_test_succeeds_against_the_emulator(cli: CliRuns) -> None:
    result = cli.results["test-good"]
    assert result.returncode == 0, cli.output("test-good")
    assert "Connection success!" in result.stdout
    calls = [(entry.path, entry.status) for entry in cli.journal if entry.query == {"limit": "1"}]
    assert ("/v1/batches", 200) in calls


@pytest.mark.timeout(180)
def test_cli_connections_test_reports_a_refused_key(cli: CliRuns) -> None:
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS

    result = cli.results["test-bad"]
    output = cli.output("test-bad")
    if AIRFLOW_V_3_3_PLUS:  # before 3.3, `airflow connections test` exits 0 whatever the test found
        assert result.returncode != 0, output
    assert "Connection failed!" in output
    assert "The API key of connection 'psopenai_bad' was refused" in output
    assert WRONG_KEY not in output
    assert ("/v1/batches", 401) in [(entry.path, entry.status) for entry in cli.journal]


# -- get_provider_info ------------------------------------------------------------------------------------------


def connection_type() -> dict[str, Any]:
    [entry] = get_provider_info()["connection-types"]
    return entry


def test_provider_info_is_registered_as_an_entry_point() -> None:
    [entry] = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_psopenai.")]
    info = entry.load()()
    assert info["package-name"] == "airflow-psopenai"
    assert info["versions"][0] == version("airflow-psopenai")


def test_connection_type_names_the_hook() -> None:
    entry = connection_type()
    module, _, name = entry["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is PSOpenAIHook
    assert entry["connection-type"] == PSOpenAIHook.conn_type
    assert entry["hook-name"] == PSOpenAIHook.hook_name


def test_every_listed_module_imports() -> None:
    info = get_provider_info()
    for kind in ("hooks", "operators", "sensors", "triggers"):
        for group in info[kind]:
            for module in group["python-modules"]:
                importlib.import_module(module)
    for link in info["extra-links"]:
        module, _, name = link.rpartition(".")
        assert hasattr(importlib.import_module(module), name)


def test_each_conn_field_has_a_label_and_a_valid_schema() -> None:
    fields = connection_type()["conn-fields"]
    assert fields
    for name, field in fields.items():
        assert field["label"], name
        assert field["description"], name
        jsonschema.Draft202012Validator.check_schema(field["schema"])
        jsonschema.validate(None, field["schema"])  # every field may be left empty


def test_conn_fields_cover_every_extra_the_hook_reads() -> None:
    # The extras resolve_settings reads from a psopenai connection (airflow_psopenai/client/settings.py).
    read_by_the_hook = {
        "organization",
        "project",
        "api_type",
        "api_version",
        "auth_type",
        "timeout_sec",
        "max_retry_count",
    }
    assert read_by_the_hook - set(connection_type()["conn-fields"]) == set()


@pytest.mark.parametrize(
    ("name", "valid", "invalid"),
    [
        ("max_retry_count", [0, 1, 100], [-1, 101, 1.5, "x", True]),
        ("timeout_sec", [0, 0.5, 600], [-1, "x"]),
        ("api_type", ["openai", "azure"], ["gcp", 1]),
        ("organization", ["org-1"], [1]),
    ],
)
def test_conn_field_schemas_match_the_hooks_rules(name: str, valid: list[object], invalid: list[object]) -> None:
    schema = connection_type()["conn-fields"][name]["schema"]
    for value in valid:
        jsonschema.validate(value, schema)
    for value in invalid:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, schema)


def test_ui_field_behaviour_hides_unused_fields_and_relabels_host_and_password() -> None:
    behaviour = connection_type()["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"schema", "port", "login"}
    assert behaviour["relabeling"] == {"host": "API base", "password": "API key"}
    assert "api.openai.com" in behaviour["placeholders"]["host"]
    assert "OPENAI_API_KEY" in behaviour["placeholders"]["password"]


# -- the connection form, as the UI of this Airflow line builds it ---------------------------------------------


def test_the_connection_form_has_every_field_on_this_airflow_line() -> None:
    """3.2+ read the provider info, 3.0 and 3.1 the hook's methods: the same form either way, and no warning.

    Airflow 3.2+ warn about a hook's form methods when the provider info declares no fields: it does.
    """
    import warnings

    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    from airflow_psopenai.hooks.connection_form import EXTRA_FIELDS

    HookMetaService.hook_meta_data.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (form,) = [meta for meta in HookMetaService.hook_meta_data() if meta.connection_type == "psopenai"]
    assert [str(w.message) for w in caught if "PSOpenAIHook" in str(w.message)] == []
    assert form.hook_name == "PSOpenAI (OpenAI API)"
    standard = form.standard_fields
    assert standard is not None
    assert (standard.host.title, standard.password.title) == ("API base", "API key")  # type: ignore[union-attr]
    assert all(field is not None and field.hidden for field in (standard.login, standard.port, standard.url_schema))
    extra = form.extra_fields or {}
    assert list(extra) == [field.name for field in EXTRA_FIELDS]
    for field in EXTRA_FIELDS:
        schema = extra[field.name]["schema"]
        assert schema["title"] == field.label
        if field.choices:
            assert set(field.choices) <= set(schema["enum"])
    # A boolean left empty shows as off: the form starts with the hook's default, on.
    assert extra["coalesce_polling"]["value"] is True
