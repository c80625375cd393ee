"""Where the hook finds its settings (argument > connection > environment > default), Azure, and the headers sent."""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from airflow.sdk import Connection

from airflow_psopenai.client.settings import HookOverrides, resolve_settings
from airflow_psopenai.exceptions import PSOpenAIConfigurationError, PSOpenAIServerError, PSOpenAITransportError
from airflow_psopenai.hooks import PSOpenAIHook
from airflow_psopenai.testing import Fault
from tests.connections import conn_json, set_connection, use_emulator
from tests.ports import free_port

if TYPE_CHECKING:
    from airflow_psopenai.testing import OpenAIEmulator

pytestmark = pytest.mark.timeout(30)


def connection(
    host: str | None = None, password: str | None = "sk-conn", conn_type: str = "psopenai", **extra: Any
) -> Connection:
    return Connection(
        conn_id="psopenai_default",
        conn_type=conn_type,
        host=host,
        password=password,
        extra=json.dumps(extra),
    )


def resolve(conn: Connection | None = None, environ: dict[str, str] | None = None, **overrides: Any) -> Any:
    extras = conn.extra_dejson if conn is not None else {}
    return resolve_settings("psopenai_default", conn, extras, HookOverrides(**overrides), environ or {})


def dead_base() -> str:
    """Return an API base on a local port nothing listens on."""
    return f"http://127.0.0.1:{free_port()}/v1"


# -- precedence, as a pure function ----------------------------------------------------------------------


ENV = {"OPENAI_API_BASE": "https://env.example/v1", "OPENAI_ORGANIZATION": "org-env", "OPENAI_API_KEY": "sk-env"}


def test_api_base_precedence() -> None:
    conn = connection(host="https://conn.example/v1")
    assert resolve(conn, ENV, api_base="https://arg.example/v1").api_base == "https://arg.example/v1"
    assert resolve(conn, ENV).api_base == "https://conn.example/v1"
    assert resolve(connection(), ENV).api_base == "https://env.example/v1"
    assert resolve(connection()).api_base == "https://api.openai.com/v1"


def test_api_base_is_normalised() -> None:
    assert resolve(connection(host="  https://conn.example/v1/ ")).api_base == "https://conn.example/v1"
    assert resolve(connection(host="gateway.example/v1")).api_base == "https://gateway.example/v1"


@pytest.mark.parametrize(
    ("base", "shown"),
    [
        ("htps://api.openai.com/v1", "'htps://api.openai.com/v1'"),
        ("ftp://gateway.example/v1", "'ftp://gateway.example/v1'"),
        ("None", "'https://None'"),  # a template that rendered None
        ("http:///v1", "'http:///v1'"),
    ],
)
def test_api_base_that_is_no_http_url_is_refused_naming_it(base: str, shown: str) -> None:
    with pytest.raises(PSOpenAIConfigurationError, match="is not an http\\(s\\) URL with a host") as refused:
        resolve(connection(host=base))
    assert f"the API base {shown}" in str(refused.value)


def test_api_base_argument_that_is_no_http_url_fails_before_any_request(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_emulator(monkeypatch, openai_emulator)
    with pytest.raises(PSOpenAIConfigurationError, match=re.escape("'htp://127.0.0.1/v1' is not an http")):
        PSOpenAIHook(api_base="htp://127.0.0.1/v1").get_batch("batch_1")
    assert openai_emulator.journal == []


def test_organization_precedence() -> None:
    conn = connection(organization="org-conn")
    assert resolve(conn, ENV, organization="org-arg").organization == "org-arg"
    assert resolve(conn, ENV).organization == "org-conn"
    assert resolve(connection(), ENV).organization == "org-env"
    assert resolve(connection()).organization is None


def test_timeout_sec_precedence() -> None:
    conn = connection(timeout_sec=5)
    assert resolve(conn, timeout_sec=2.5).timeout_sec == 2.5
    assert resolve(conn, timeout_sec=0).timeout_sec == 0.0  # 0 is a setting, not "unset"
    assert resolve(conn).timeout_sec == 5.0
    assert resolve(connection(timeout_sec="7.5")).timeout_sec == 7.5
    assert resolve(connection(timeout_sec="")).timeout_sec == 0.0
    assert resolve(connection()).timeout_sec == 0.0


def test_max_retry_count_precedence() -> None:
    conn = connection(max_retry_count=4)
    assert resolve(conn, max_retry_count=9).max_retry_count == 9
    assert resolve(conn, max_retry_count=0).max_retry_count == 0  # 0 is a setting, not "unset"
    assert resolve(conn).max_retry_count == 4
    assert resolve(connection(max_retry_count="6")).max_retry_count == 6
    assert resolve(connection()).max_retry_count == 0


def test_api_key_precedence() -> None:
    assert resolve(connection(password="sk-conn"), ENV).api_key == "sk-conn"
    assert resolve(connection(password=None), ENV).api_key == "sk-env"
    assert resolve(connection(password=""), ENV).api_key == "sk-env"
    assert resolve(None, ENV).api_key == "sk-env"


def test_no_key_anywhere_is_a_clear_error() -> None:
    with pytest.raises(PSOpenAIConfigurationError) as raised:
        resolve(connection(password=None))
    message = str(raised.value)
    assert "psopenai_default" in message
    assert "OPENAI_API_KEY" in message
    assert "password" in message


def test_azure_without_host_is_a_clear_error() -> None:
    with pytest.raises(PSOpenAIConfigurationError) as raised:
        resolve(connection(api_type="azure"))
    assert "azure" in str(raised.value)
    assert "host" in str(raised.value)
    assert "psopenai_default" in str(raised.value)


@pytest.mark.parametrize(
    ("name", "value"), [("api_type", "gcp"), ("api_type", "openai-compatible"), ("auth_type", "oauth")]
)
def test_unknown_api_type_or_auth_type_is_refused(name: str, value: str) -> None:
    with pytest.raises(PSOpenAIConfigurationError) as raised:
        resolve(connection(**{name: value}))
    assert name in str(raised.value)
    assert repr(value) in str(raised.value)
    assert "psopenai_default" in str(raised.value)


@pytest.mark.parametrize("value", [-1, "-0.5", "abc", True, "inf", float("nan"), [5]])
def test_bad_timeout_sec_extra_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="timeout_sec"):
        resolve(connection(timeout_sec=value))


@pytest.mark.parametrize("value", [-1, 101, "abc", 1.5, True, float("inf")])
def test_bad_max_retry_count_extra_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="max_retry_count"):
        resolve(connection(max_retry_count=value))


@pytest.mark.parametrize(("name", "value"), [("timeout_sec", "soon"), ("timeout_sec", -1), ("max_retry_count", 500)])
def test_bad_number_extra_is_a_configuration_error_naming_the_connection(name: str, value: object) -> None:
    # Like a bad api_type: the user must learn which connection holds the bad value.
    with pytest.raises(PSOpenAIConfigurationError) as raised:
        resolve(connection(**{name: value}))
    assert name in str(raised.value)
    assert "psopenai_default" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), (True, True), (False, False), ("false", False), (" No ", False), ("1", True)],
)
def test_coalesce_polling_extra_is_on_unless_the_connection_turns_it_off(value: object, expected: bool) -> None:
    extra = {} if value is None else {"coalesce_polling": value}
    assert resolve(connection(**extra)).coalesce_polling is expected


@pytest.mark.parametrize("value", ["maybe", 2, [True]])
def test_bad_coalesce_polling_extra_is_refused_naming_the_connection(value: object) -> None:
    with pytest.raises(PSOpenAIConfigurationError, match=r"psopenai_default.*coalesce_polling must be true or false"):
        resolve(connection(coalesce_polling=value))


def test_repr_of_settings_leaves_the_key_out() -> None:
    settings = resolve(connection(password="sk-very-secret-key-123456"))
    assert "sk-very-secret-key-123456" not in repr(settings)
    assert "sk-very-secret-key-123456" not in str(settings)
    assert "psopenai_default" in repr(settings)


# -- timeouts ----------------------------------------------------------------------------------------------


def test_timeout_sec_0_means_no_read_limit_but_a_connect_timeout() -> None:
    timeout = resolve(connection(), timeout_sec=0).timeout()
    assert timeout.read is None
    assert timeout.write is None
    assert timeout.connect == 10.0


def test_timeout_sec_limits_every_phase_and_the_connect() -> None:
    timeout = resolve(connection(), timeout_sec=30).timeout()
    assert (timeout.read, timeout.write, timeout.pool, timeout.connect) == (30.0, 30.0, 30.0, 10.0)
    short = resolve(connection(), timeout_sec=0.5).timeout()
    assert (short.read, short.connect) == (0.5, 0.5)


def test_hook_client_uses_the_resolved_timeouts(emulator: OpenAIEmulator) -> None:
    assert PSOpenAIHook(timeout_sec=0).client.timeout.read is None
    assert PSOpenAIHook(timeout_sec=0).client.timeout.connect == 10.0
    assert PSOpenAIHook(timeout_sec=3).client.timeout.read == 3.0


# -- precedence over real HTTP with connections from AIRFLOW_CONN_* ------------------------------------------


def test_api_base_argument_beats_connection(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_connection(monkeypatch, "psopenai_default", conn_json(dead_base(), openai_emulator.api_key))
    batch = openai_emulator.create_batch()
    assert PSOpenAIHook(api_base=openai_emulator.api_base).get_batch(batch["id"])["id"] == batch["id"]
    assert len(openai_emulator.journal) == 1


def test_connection_host_beats_environment(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE", dead_base())
    batch = emulator.create_batch()
    assert PSOpenAIHook().get_batch(batch["id"])["id"] == batch["id"]


def test_environment_api_base_is_used_when_the_connection_has_no_host(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, "psopenai_default", conn_json(password=openai_emulator.api_key))
    monkeypatch.setenv("OPENAI_API_BASE", openai_emulator.api_base)
    batch = openai_emulator.create_batch()
    assert PSOpenAIHook().get_batch(batch["id"])["id"] == batch["id"]


def test_organization_argument_connection_environment(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = openai_emulator.create_batch()
    monkeypatch.setenv("OPENAI_ORGANIZATION", "org-env")
    use_emulator(monkeypatch, openai_emulator, organization="org-conn")
    PSOpenAIHook(organization="org-arg").get_batch(batch["id"])
    PSOpenAIHook().get_batch(batch["id"])
    use_emulator(monkeypatch, openai_emulator)
    PSOpenAIHook().get_batch(batch["id"])
    monkeypatch.delenv("OPENAI_ORGANIZATION")
    PSOpenAIHook().get_batch(batch["id"])
    sent = [entry.headers.get("openai-organization") for entry in openai_emulator.journal]
    assert sent == ["org-arg", "org-conn", "org-env", None]


def test_max_retry_count_argument_connection_default(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, fast_backoff: None
) -> None:
    batch = openai_emulator.create_batch()
    use_emulator(monkeypatch, openai_emulator, max_retry_count="2")

    def requests_for(hook: PSOpenAIHook) -> int:
        openai_emulator.reset()
        openai_emulator.add_fault(Fault.server_error(500), times=10)
        with pytest.raises(PSOpenAIServerError):
            hook.get_batch(batch["id"])
        return len(openai_emulator.journal)

    assert requests_for(PSOpenAIHook(max_retry_count=1)) == 2
    assert requests_for(PSOpenAIHook(max_retry_count=0)) == 1
    assert requests_for(PSOpenAIHook()) == 3
    use_emulator(monkeypatch, openai_emulator)
    assert requests_for(PSOpenAIHook()) == 1


def test_timeout_sec_argument_beats_connection(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = openai_emulator.create_batch()
    use_emulator(monkeypatch, openai_emulator, timeout_sec=0.3)
    openai_emulator.add_fault(Fault.latency(0.6))
    # The argument (5 s) wins over the connection's 0.3 s: the slow answer arrives.
    assert PSOpenAIHook(timeout_sec=5).get_batch(batch["id"])["id"] == batch["id"]
    assert PSOpenAIHook().settings.timeout_sec == 0.3


def test_connection_password_beats_openai_api_key(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-from-the-environment")
    batch = emulator.create_batch()
    assert PSOpenAIHook().get_batch(batch["id"])["id"] == batch["id"]


def test_openai_api_key_is_used_when_the_connection_has_no_password(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, "psopenai_default", conn_json(openai_emulator.api_base))
    monkeypatch.setenv("OPENAI_API_KEY", openai_emulator.api_key)
    batch = openai_emulator.create_batch()
    assert PSOpenAIHook().get_batch(batch["id"])["id"] == batch["id"]


def test_missing_default_connection_works_with_openai_api_key(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", openai_emulator.api_key)
    monkeypatch.setenv("OPENAI_API_BASE", openai_emulator.api_base)
    batch = openai_emulator.create_batch()
    assert PSOpenAIHook().get_batch(batch["id"])["id"] == batch["id"]
    assert openai_emulator.journal[0].headers["authorization"] == "<redacted>"


def test_missing_default_connection_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", raising=False)
    with pytest.raises(PSOpenAIConfigurationError) as raised:
        _ = PSOpenAIHook().settings
    assert "psopenai_default" in str(raised.value)
    assert "OPENAI_API_KEY" in str(raised.value)


def test_missing_named_connection_is_a_clear_error_even_with_openai_api_key(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", openai_emulator.api_key)
    monkeypatch.setenv("OPENAI_API_BASE", openai_emulator.api_base)
    with pytest.raises(PSOpenAIConfigurationError) as raised:
        PSOpenAIHook("my_openai").get_batch("batch_1")
    assert "'my_openai' is not defined" in str(raised.value)
    assert "AIRFLOW_CONN_MY_OPENAI" in str(raised.value)
    assert openai_emulator.journal == []


def test_named_connection_is_used(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use_emulator(monkeypatch, openai_emulator, conn_id="my_openai", organization="org-named")
    batch = openai_emulator.create_batch()
    assert PSOpenAIHook("my_openai").get_batch(batch["id"])["id"] == batch["id"]
    assert openai_emulator.journal[0].headers["openai-organization"] == "org-named"


@pytest.mark.parametrize(
    "extra",
    [
        {"api_type": "gcp"},
        {"auth_type": "basic"},
        {"timeout_sec": "soon"},
        {"timeout_sec": -3},
        {"max_retry_count": 500},
    ],
)
def test_bad_extras_are_refused_before_any_request(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, extra: dict[str, object]
) -> None:
    use_emulator(monkeypatch, openai_emulator, **extra)
    [(name, _)] = extra.items()
    with pytest.raises(ValueError, match=name):
        PSOpenAIHook().get_batch("batch_1")
    assert openai_emulator.journal == []


def test_official_openai_connection_type_with_client_kwargs(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(
        monkeypatch,
        "openai_default",
        conn_json(
            openai_emulator.api_base,
            openai_emulator.api_key,
            conn_type="openai",
            openai_client_kwargs={"organization": "org-official", "project": "proj-official"},
        ),
    )
    batch = openai_emulator.create_batch()
    hook = PSOpenAIHook("openai_default")
    assert hook.cancel_batch(batch["id"])["status"] == "cancelling"
    headers = openai_emulator.journal[0].headers
    assert headers["openai-organization"] == "org-official"
    assert headers["openai-project"] == "proj-official"
    assert headers["authorization"] == "<redacted>"


def test_client_kwargs_are_ignored_for_the_psopenai_connection_type() -> None:
    conn = connection(openai_client_kwargs={"organization": "org-x", "project": "proj-x"})
    settings = resolve(conn)
    assert (settings.organization, settings.project) == (None, None)


# -- headers the emulator sees ----------------------------------------------------------------------------


def test_batch_calls_send_authorization_and_user_agent_but_no_optional_headers(emulator: OpenAIEmulator) -> None:
    batch = emulator.create_batch()
    hook = PSOpenAIHook()
    hook.get_batch(batch["id"])
    hook.cancel_batch(batch["id"])
    assert [entry.method for entry in emulator.journal] == ["GET", "POST"]
    for entry in emulator.journal:
        assert entry.headers["authorization"] == "<redacted>"
        assert "api-key" not in entry.headers
        assert "openai-organization" not in entry.headers
        assert "openai-project" not in entry.headers
        assert "openai-beta" not in entry.headers
        assert entry.headers["user-agent"].startswith(f"airflow-psopenai/{version('airflow-psopenai')} ")


def test_authorization_is_a_bearer_token_with_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "batch_1", "object": "batch", "status": "in_progress"})

    set_connection(monkeypatch, "psopenai_default", conn_json("https://api.example.test/v1", "sk-bearer-check-1"))
    hook = PSOpenAIHook()
    hook.__dict__["client"] = httpx.Client(transport=httpx.MockTransport(handler))
    hook.get_batch("batch_1")
    assert seen[0].headers["authorization"] == "Bearer sk-bearer-check-1"
    assert str(seen[0].url) == "https://api.example.test/v1/batches/batch_1"


def test_organization_and_project_headers_are_sent_when_set(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_emulator(monkeypatch, openai_emulator, organization="org-123", project="proj-456")
    run = openai_emulator.create_thread_run()
    batch = openai_emulator.create_batch()
    hook = PSOpenAIHook()
    hook.get_batch(batch["id"])
    hook.get_thread_run(run["thread_id"], run["id"])
    for entry in openai_emulator.journal:
        assert entry.headers["openai-organization"] == "org-123"
        assert entry.headers["openai-project"] == "proj-456"


def test_thread_run_calls_send_the_assistants_beta_header(emulator: OpenAIEmulator) -> None:
    run = emulator.create_thread_run()
    hook = PSOpenAIHook()
    assert hook.get_thread_run(run["thread_id"], run["id"])["status"] == "in_progress"
    assert hook.cancel_thread_run(run["thread_id"], run["id"])["status"] == "cancelling"
    assert [(entry.method, entry.status) for entry in emulator.journal] == [("GET", 200), ("POST", 200)]
    for entry in emulator.journal:
        assert entry.headers["openai-beta"] == "assistants=v2"
        assert entry.headers["authorization"] == "<redacted>"
        assert entry.headers["user-agent"].startswith("airflow-psopenai/")


# -- Azure ---------------------------------------------------------------------------------------------------


def azure(monkeypatch: pytest.MonkeyPatch, emulator: OpenAIEmulator, host: str | None = None, **extra: Any) -> None:
    set_connection(
        monkeypatch,
        "psopenai_default",
        conn_json(host or emulator.base_url, emulator.api_key, api_type="azure", **extra),
    )


def test_azure_uses_openai_paths_api_version_and_api_key_header(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    azure(monkeypatch, openai_emulator)
    batch = openai_emulator.create_batch()
    hook = PSOpenAIHook()
    assert hook.get_batch(batch["id"])["id"] == batch["id"]
    assert hook.cancel_batch(batch["id"])["status"] == "cancelling"
    get, cancel = openai_emulator.journal
    assert get.raw_target == f"/openai/batches/{batch['id']}?api-version=2025-04-01-preview"
    assert cancel.raw_target == f"/openai/batches/{batch['id']}/cancel?api-version=2025-04-01-preview"
    for entry in (get, cancel):
        assert entry.headers["api-key"] == "<redacted>"
        assert "authorization" not in entry.headers


def test_azure_api_version_from_the_connection(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    azure(monkeypatch, openai_emulator, api_version="2024-10-21")
    batch = openai_emulator.create_batch()
    PSOpenAIHook().get_batch(batch["id"])
    assert openai_emulator.journal[0].query == {"api-version": "2024-10-21"}


def test_azure_thread_runs(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    azure(monkeypatch, openai_emulator, api_version="2024-05-01-preview")
    run = openai_emulator.create_thread_run()
    assert PSOpenAIHook().cancel_thread_run(run["thread_id"], run["id"])["status"] == "cancelling"
    [entry] = openai_emulator.journal
    assert entry.raw_target == (
        f"/openai/threads/{run['thread_id']}/runs/{run['id']}/cancel?api-version=2024-05-01-preview"
    )
    assert entry.headers["openai-beta"] == "assistants=v2"
    assert entry.headers["api-key"] == "<redacted>"


def test_azure_entra_id_sends_a_bearer_token(openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    azure(monkeypatch, openai_emulator, auth_type="entra_id")
    batch = openai_emulator.create_batch()
    assert PSOpenAIHook().get_batch(batch["id"])["id"] == batch["id"]
    [entry] = openai_emulator.journal
    assert entry.headers["authorization"] == "<redacted>"
    assert "api-key" not in entry.headers
    assert entry.path == f"/openai/batches/{batch['id']}"


def test_azure_v1_host_uses_v1_paths_without_api_version(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    azure(monkeypatch, openai_emulator, host=openai_emulator.base_url + "/openai/v1/")
    batch = openai_emulator.create_batch()
    assert PSOpenAIHook().cancel_batch(batch["id"])["status"] == "cancelling"
    [entry] = openai_emulator.journal
    assert entry.raw_target == f"/openai/v1/batches/{batch['id']}/cancel"
    assert entry.query == {}
    assert entry.headers["api-key"] == "<redacted>"


def test_azure_connection_without_host_is_a_clear_error(
    openai_emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_connection(monkeypatch, "my_azure", conn_json(password="azure-key-123456", api_type="azure"))
    with pytest.raises(PSOpenAIConfigurationError) as raised:
        PSOpenAIHook("my_azure").get_batch("batch_1")
    assert "'my_azure'" in str(raised.value)
    assert "RESOURCE.openai.azure.com" in str(raised.value)


def test_uri_form_connection_keeps_port_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # psopenai://:KEY@host:port/v1 splits the base into host, port and schema.
    uri_form = Connection(
        conn_id="psopenai_default", conn_type="psopenai", host="gateway.example", port=8080, schema="v1", password="sk"
    )
    assert resolve(uri_form).api_base == "https://gateway.example:8080/v1"
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", "psopenai://:sk-uri@gateway.example:8443/v1")
    assert PSOpenAIHook().settings.api_base == "https://gateway.example:8443/v1"


def test_azure_host_given_with_openai_suffix_is_not_doubled() -> None:
    settings = resolve(connection("https://res.openai.azure.com/openai", api_type="azure"))
    assert (
        str(settings.url("/batches/b"))
        == "https://res.openai.azure.com/openai/batches/b?api-version=2025-04-01-preview"
    )


# -- keys, organizations and projects as secrets backends hand them over --------------------------------------


def test_surrounding_white_space_is_stripped_from_key_organization_and_project() -> None:
    conn = connection(password="  sk-mounted-secret\n", organization=" org-1\n", project="\tproj_1 ")
    settings = resolve(conn)
    assert (settings.api_key, settings.organization, settings.project) == ("sk-mounted-secret", "org-1", "proj_1")
    assert resolve(None, {"OPENAI_API_KEY": "sk-env\r\n", "OPENAI_ORGANIZATION": "org-env\n"}).headers({}) == {
        "Authorization": "Bearer sk-env",
        "OpenAI-Organization": "org-env",
    }


def test_a_key_read_from_a_mounted_secret_works(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file-mounted secret ends in a newline; httpx would refuse it as an illegal header value."""
    use_emulator(monkeypatch, emulator, password=emulator.api_key + "\n")
    batch = emulator.create_batch()
    assert PSOpenAIHook().get_batch(str(batch["id"]))["id"] == batch["id"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("password", "sk-abc\ndef-0123456789"),
        ("password", "sk-abc\tdef-0123456789"),
        ("password", "sk-abc\x00def-0123456789"),
        ("password", "sk-abcdéf-0123456789"),
        ("organization", "org-a\nb"),
        ("project", "proj_é"),
    ],
)
def test_a_control_character_or_non_ascii_inside_is_refused_naming_the_connection_only(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    fields: dict[str, Any] = {"conn_type": "psopenai", "host": emulator.api_base, "password": emulator.api_key}
    if field == "password":
        fields["password"] = value
    else:
        fields["extra"] = {field: value}
    set_connection(monkeypatch, "psopenai_default", json.dumps(fields))
    with pytest.raises(PSOpenAIConfigurationError) as refused:
        PSOpenAIHook().get_batch("batch_1")
    message = str(refused.value)
    assert "'psopenai_default'" in message
    assert value not in message
    if field == "password":
        assert "sk-abc" not in message  # not even a part of the key
    else:
        assert field in message
    assert emulator.journal == []


# -- API bases users mistype, and the URI form's way to say http ------------------------------------------------


@pytest.mark.parametrize(
    "base",
    [
        "http//api.openai.com/v1",
        "https//api.openai.com/v1",
        "http:/api.openai.com/v1",
        "https:api.openai.com/v1",
        "api.openai.com:port/v1",
        "api openai com/v1",
        "https://user:sk-secret@gateway.example/v1",
    ],
)
def test_a_mistyped_api_base_is_refused_naming_the_connection_and_the_value(base: str) -> None:
    with pytest.raises(PSOpenAIConfigurationError) as refused:
        resolve(connection(host=base))
    message = str(refused.value)
    assert "'psopenai_default'" in message
    assert "sk-secret" not in message
    assert "https://api.openai.com/v1" in message  # what a good value looks like


def test_a_bare_host_still_defaults_to_https() -> None:
    assert resolve(connection(host="gateway.example:8443/v1")).api_base == "https://gateway.example:8443/v1"
    assert resolve(connection(host="127.0.0.1:8080/v1")).api_base == "https://127.0.0.1:8080/v1"


def test_an_https_base_that_speaks_plain_http_says_to_write_http(
    emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = emulator.api_base.removeprefix("http://")
    use_emulator(monkeypatch, emulator)
    with pytest.raises(PSOpenAITransportError) as failed:
        PSOpenAIHook(api_base=bare).get_batch("batch_1")
    assert f"write http://{bare}" in str(failed.value)


def test_the_uri_form_reaches_an_http_endpoint(emulator: OpenAIEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's URI form names the scheme after the connection type: psopenai://http://:KEY@host:port/v1."""
    host_port = emulator.base_url.removeprefix("http://")
    monkeypatch.setenv("AIRFLOW_CONN_PSOPENAI_DEFAULT", f"psopenai://http://:{emulator.api_key}@{host_port}/v1")
    assert PSOpenAIHook().settings.api_base == emulator.api_base
    batch = emulator.create_batch()
    assert PSOpenAIHook().get_batch(str(batch["id"]))["id"] == batch["id"]
