"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

A live server (API, broker, local backend) runs real tasks; the browser logs in with
a token, follows a running task from the overview to its page and sees it finish,
filters the task list, opens a workflow's report, and writes screenshots of the main
pages to docs/screenshots/ (linked from the README).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.accounts import Accounts
from bridge.client import BridgeClient
from bridge.config import Settings
from bridge.db import make_engine, upgrade
from bridge.server import free_port, serve_in_thread

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
TIMEOUT_MS = 60_000


@pytest.fixture
def live(settings: Settings) -> Iterator[dict[str, Any]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed: scripts/test installs it (apt-ensure)")
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="playwright is in the dashboard extra (scripts/bootstrap all)"
    )
    settings = settings.model_copy(update={"port": free_port()})
    settings.broker.poll_interval_s = 0.2
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    accounts = Accounts(engine)
    accounts.add_user("ada", "admin")
    _, token = accounts.create_token("ada")
    engine.dispose()
    with (
        serve_in_thread(settings) as url,
        BridgeClient(url, token=token) as client,
        playwright.sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        try:
            yield {"url": url, "client": client, "token": token, "page": page}
        finally:
            browser.close()


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_follow_a_task_filter_and_open_a_report(live: dict[str, Any], tmp_path: Path) -> None:
    page, url, client = live["page"], live["url"], live["client"]
    finished = client.submit(
        {
            "name": "warm-up",
            "tags": {"workflow": "wf-browser"},
            "executors": [{"image": "alpine", "command": ["sh", "-c", "echo warm"]}],
        }
    )
    failing = client.submit(
        {
            "name": "broken-step",
            "tags": {"workflow": "wf-browser"},
            "executors": [{"image": "alpine", "command": ["sh", "-c", "echo boom >&2; exit 3"]}],
        }
    )
    finished.result(timeout=60)
    failing.wait(timeout=60)
    # a task that runs long enough to be seen running, and is told when to end
    gate = tmp_path / "gate"
    running = client.submit(
        {
            "name": "long-step",
            "tags": {"workflow": "wf-browser"},
            "executors": [
                {
                    "image": "alpine",
                    "command": [
                        "sh",
                        "-c",
                        f"while [ ! -e {gate} ]; do sleep 0.2; done; echo finished",
                    ],
                }
            ],
        }
    )

    page.goto(f"{url}/")
    assert page.url.startswith(f"{url}/login")
    page.fill("#token", "wrong-token")
    page.click("#login")
    page.wait_for_selector("#error")
    page.fill("#token", live["token"])
    page.click("#login")
    page.wait_for_selector("#targets")

    # the overview refreshes itself until the task shows as running, then we follow it
    link = page.locator("table.active a.task-link", has_text="long-step")
    link.wait_for()
    page.wait_for_function(
        "() => document.querySelector('#main').innerText.includes('Running')",
        timeout=TIMEOUT_MS,
    )
    _shot(page, "overview")
    page.locator("table.active a.task-link", has_text="long-step").click()
    page.wait_for_selector("#events")
    assert running.id in page.url
    assert "COMPLETE" not in page.inner_text("#task-state")
    gate.touch()
    page.wait_for_function(
        "() => document.querySelector('#task-state').innerText.includes('COMPLETE')",
        timeout=TIMEOUT_MS,
    )
    assert "finished" in page.inner_text("#main")
    _shot(page, "task")

    # filter the task list by state
    page.goto(f"{url}/tasks")
    page.select_option("#f-state", "EXECUTOR_ERROR")
    page.click("#f-apply")
    page.wait_for_url("**/tasks?state=EXECUTOR_ERROR**")
    states = page.locator("tr.task-row").evaluate_all("rows => rows.map(r => r.dataset.state)")
    assert states == ["EXECUTOR_ERROR"]
    assert "broken-step" in page.inner_text("#task-list")
    page.fill("#f-name", "long")
    page.select_option("#f-state", "")
    page.click("#f-apply")
    page.wait_for_url("**name=long**")
    assert page.locator("tr.task-row").count() == 1
    _shot(page, "tasks")

    # the workflow, then its report
    page.goto(f"{url}/workflows")
    page.click("a.workflow-link")
    page.wait_for_selector("#workflow-tasks")
    first = page.locator("#workflow-tasks tr").nth(1).inner_text()
    assert "broken-step" in first  # failures first
    _shot(page, "workflow")
    page.click("#report-link")
    page.wait_for_selector("#report-tasks")
    text = page.inner_text("body")
    assert "Workflow report: workflow=wf-browser" in text
    assert "boom" in text  # the failure's log tail
    _shot(page, "report")
