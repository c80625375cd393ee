"""The page itself and the plugin that registers it."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_psopenai.testing import OpenAIEmulator
    from tests.web.conftest import PageClient

STATIC = resources.files("airflow_psopenai.web").joinpath("static")


def test_loading_the_plugin_imports_no_fastapi_and_none_of_the_page() -> None:
    code = (
        "import sys; import airflow.providers.common.compat.sdk; before = set(sys.modules); "
        "import airflow_psopenai.plugin; "
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(('fastapi', 'airflow_psopenai.web'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_the_script_writes_text_never_html() -> None:
    script = STATIC.joinpath("page.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", script)
    assert "textContent" in script
    # Links to the console only when the server gave one of its pages; to other sites without a referrer.
    assert "startsWith(CONSOLE)" in script
    assert 'rel: "noopener noreferrer"' in script


def test_the_page_is_served_with_a_policy_that_allows_only_its_own_script(
    page_server: PageClient, emulator: OpenAIEmulator
) -> None:
    page = page_server.get("/psopenai/", "vera")
    script = page_server.get("/psopenai/page.js", "vera")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<table id="batches">' in page.text  # the plugin's page, not the UI's
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'self'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"].startswith("text/javascript")
    assert emulator.api_key not in page.text + script.text


def test_airflow_lists_the_plugin_with_its_app_and_views(page_server: PageClient, emulator: OpenAIEmulator) -> None:
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_1_PLUS

    plugins = page_server.get("/api/v2/plugins", "vera").json()["plugins"]
    ours = next(plugin for plugin in plugins if plugin["name"] == "psopenai")

    assert [app["url_prefix"] for app in ours["fastapi_apps"]] == ["/psopenai"]
    views = {view["destination"]: view["href"] for view in ours.get("external_views", [])}
    if AIRFLOW_V_3_1_PLUS:
        assert views == {"nav": "/psopenai/", "dag_run": "/psopenai/?dag_id={DAG_ID}&run_id={RUN_ID}"}
    else:  # Airflow 3.0's UI shows no plugin views
        assert views == {}
