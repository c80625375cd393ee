"""The OpenAI page in a real browser on the production-shaped cluster: logged in through the UI's form, the
table of the account's batches, a cancel from its button (sent once), and the page in Airflow's navigation.

Screenshots go where ``PSOPENAI_SCREENSHOTS_DIR`` says, as in tests/e2e/cluster/test_browser.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.e2e.cluster.test_browser import IMAGES, page  # the logged-in browser page
from tests.e2e.stack import EMULATOR_KEY

if TYPE_CHECKING:
    from playwright.sync_api import Page

    from tests.e2e.cluster.cluster_stack import ClusterStack

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

__all__ = ["page"]
TAGS = {
    "airflow_dag_id": "example_psopenai_cancel_on_failure",
    "airflow_run_id": "manual__ui",
    "airflow_task_id": "submit_batch",
}


def test_the_page_lists_the_batches_and_cancels_one_from_its_button(cluster: ClusterStack, page: Page) -> None:
    from playwright.sync_api import expect

    batch = cluster.create_batch(metadata=TAGS, total_requests=400)
    # A value from the API that is markup: shown as text, never run.
    hostile = cluster.create_batch(metadata={**TAGS, "airflow_task_id": "<img src=x onerror=alert(1)>"})

    page.goto(f"{cluster.api_url}/psopenai/")
    row = page.locator(f'tr[data-id="{batch["id"]}"]')
    expect(row).to_contain_text("in_progress")
    expect(row.locator("progress")).to_have_count(1)
    expect(row.get_by_role("link", name="example_psopenai_cancel_on_failure / manual__ui")).to_have_attribute(
        "href", "/dags/example_psopenai_cancel_on_failure/runs/manual__ui"
    )
    hostile_row = page.locator(f'tr[data-id="{hostile["id"]}"]')
    expect(hostile_row).to_contain_text("<img src=x onerror=alert(1)>")
    assert hostile_row.locator("img").count() == 0
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "openai-page.png"))

    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".status")).to_have_text("cancelling")
    expect(page.locator("#notice")).to_contain_text(": sent.")
    assert len(cluster.batch_cancels(batch["id"])) == 1
    assert EMULATOR_KEY not in page.content()

    page.goto(f"{cluster.api_url}/plugin/psopenai")  # the navigation's view: the page in Airflow's frame
    frame = page.frame_locator('iframe[title="OpenAI"]')
    expect(frame.locator(f'tr[data-id="{hostile["id"]}"]')).to_be_visible()
    page.screenshot(path=str(IMAGES / "openai-page-in-airflow.png"))
