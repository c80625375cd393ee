"""The Airflow UI in a real browser (Debian's Chromium, driven by Playwright): the connection form, and
a finished cancel that shows no key.

Logs in as a user of the simple auth manager with its password, as a person would. The screenshots
of the connection form and of a DAG run's grid after a cancel-on-failure go to the folder named by
``PSOPENAI_SCREENSHOTS_DIR`` (the Makefile's ``SCREENSHOTS_DIR``: ``.e2e-cluster-screenshots/`` unless
``make e2e-cluster SCREENSHOTS_DIR=docs/images`` asks for the README's pictures to be replaced), so
that a test run leaves the work tree as it found it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.cluster.cluster_stack import ADMIN
from tests.e2e.stack import EMULATOR_KEY, REPO

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Page

    from tests.e2e.cluster.cluster_stack import ClusterStack

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

IMAGES = REPO / os.environ.get("PSOPENAI_SCREENSHOTS_DIR", ".e2e-cluster-screenshots")
# Debian's chromium package: the program itself, not its shell wrapper (Playwright passes its own flags).
CHROMIUM = Path("/usr/lib/chromium/chromium")
UI_TIMEOUT_MS = 30_000
FORM_SCREENSHOT_HEIGHT = 1500
CONN_ID = "psopenai_ui"
STANDARD_LABELS = ["API base", "API key"]
# airflow_psopenai/hooks/connection_form.py's labels, in its order.
EXTRA_LABELS = [
    "Organization",
    "Project",
    "API type",
    "Auth type",
    "Azure API version",
    "Timeout (seconds)",
    "Max retry count",
    "Coalesce batch polls",
]
DEMO_DAG = "example_psopenai_cancel_on_failure"


@pytest.fixture
def page(cluster: ClusterStack) -> Iterator[Page]:
    """Yield a browser page logged in to the Airflow UI as the admin user."""
    from playwright.sync_api import sync_playwright

    executable = CHROMIUM if CHROMIUM.exists() else Path(shutil.which("chromium") or "chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(f"{cluster.api_url}/")
            page.get_by_label("Username").fill(ADMIN)
            page.get_by_label("Password").fill(cluster.admin_password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{cluster.api_url}/")
            yield page
        finally:
            browser.close()


def field_labels(section: Any) -> list[str]:
    """Return the labels of a form section's fields, without the required-field star."""
    return [text.replace("*", "").strip() for text in section.locator("label").all_inner_texts() if text.strip()]


def extra_field(dialog: Any, label: str) -> Any:
    """Return the field (label, input, help) of an extra by its label.

    Airflow 3.3.2's labels of extra fields do not name their inputs (``for`` points elsewhere), so
    the field is found as a person sees it: the group that shows the label.
    """
    return dialog.get_by_role("group").filter(has=dialog.page.locator("label", has_text=label))


def test_the_connection_form_creates_a_connection_that_tests_successfully(cluster: ClusterStack, page: Page) -> None:
    stack = cluster
    page.goto(f"{stack.api_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    connection_type = dialog.get_by_role("combobox", name="Connection Type")
    connection_type.fill("PSOpenAI")
    page.get_by_role("option", name="PSOpenAI (OpenAI API)", exact=True).click()

    # The standard fields, relabelled (host and password; login, schema and port hidden), then the extras.
    assert field_labels(dialog) == ["Connection ID", "Connection Type", "Description", *STANDARD_LABELS, *EXTRA_LABELS]
    dialog.get_by_label("API base").fill(stack.emulator_api_base)
    dialog.get_by_label("API key").fill(EMULATOR_KEY)
    assert dialog.get_by_label("API key").get_attribute("type") == "password"
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for label in EXTRA_LABELS:
        extra_field(dialog, label).wait_for()  # shown once the section is open
    extra_field(dialog, "Organization").locator("input").fill("org-ui")
    extra_field(dialog, "Timeout (seconds)").locator("input").fill("30")
    extra_field(dialog, "Max retry count").locator("input").fill("2")
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": FORM_SCREENSHOT_HEIGHT})  # the whole open form
    dialog.screenshot(path=str(IMAGES / "connection-form.png"))
    dialog.get_by_role("button", name="Save").click()

    row = page.get_by_role("row").filter(has_text=CONN_ID)
    row.wait_for()
    stored = stack.get(f"/api/v2/connections/{CONN_ID}")
    assert (stored["conn_type"], stored["host"], stored["password"]) == ("psopenai", stack.emulator_api_base, "***")
    assert stored["port"] is None

    # Airflow 3.3.2's Test button sends `Number(port)`, 0 for a connection without a port, and its API
    # then refuses to test with the stored key ("The host or port to test differs from the stored
    # connection"), for every connection type that hides the port. Port 0 means "none" to this
    # connection type (its host holds the whole URL), so storing it lets the button test the key the
    # form saved.
    stack.patch(
        f"/api/v2/connections/{CONN_ID}?update_mask=port",
        {"connection_id": CONN_ID, "conn_type": "psopenai", "port": 0},
    )
    before = len(stack.journal("GET", "/v1/batches"))
    row.get_by_role("button", name="Test Connection").click()
    page.get_by_role("status").filter(has_text="Test Connection Successful").wait_for()
    assert "Test Connection Failed" not in " ".join(page.get_by_role("status").all_inner_texts())
    # The test's one cheap call reached the emulator, with the key the form stored.
    tests = stack.journal("GET", "/v1/batches")[before:]
    assert [entry["query"] for entry in tests] == [{"limit": "1"}]
    assert tests[0]["status"] == 200
    assert tests[0]["headers"]["openai-organization"] == "org-ui"


def test_a_finished_cancel_shows_no_key_in_its_rendered_templates_or_log(cluster: ClusterStack, page: Page) -> None:
    stack = cluster
    stack.emulator_settings(cancel_delay=3)
    run_id = stack.trigger(DEMO_DAG, {"fail_processing": True})
    result = stack.wait_run(DEMO_DAG, run_id, timeout=240)
    # What the grid shows (tests/examples checks the whole run): the processing failed, the cancel ran.
    assert result.state == "failed"
    assert (result.states["process_records"], result.states["cancel_batch"]) == ("failed", "success")
    batch_id = stack.xcom(DEMO_DAG, run_id, "submit_batch")["id"]

    run_page = f"{stack.api_url}/dags/{DEMO_DAG}/runs/{run_id}"
    page.goto(run_page)
    page.get_by_text("6 Task Instances").wait_for()
    page.get_by_role("link", name="cancel_batch", exact=True).first.wait_for()
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "cancel-on-failure-grid.png"))

    page.goto(f"{run_page}/tasks/cancel_batch")
    page.get_by_text(f"Cancel requested for batch '{batch_id}'").wait_for()
    # The trigger's line and the resumed task's own outcome line both say it.
    page.get_by_text(f"batch '{batch_id}' is cancelled").first.wait_for()
    assert EMULATOR_KEY not in page.inner_text("body")

    page.goto(f"{run_page}/tasks/cancel_batch/rendered_templates")
    page.get_by_text(f'"{batch_id}"').first.wait_for()
    assert EMULATOR_KEY not in page.inner_text("body")
    # The files behind the log view (the worker's and the triggerer's) hold no key either.
    assert batch_id in stack.task_log(DEMO_DAG, run_id, "cancel_batch")
    assert EMULATOR_KEY not in stack.task_log(DEMO_DAG, run_id, "cancel_batch")
