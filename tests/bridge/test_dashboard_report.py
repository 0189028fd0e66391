"""Workflow reports and the account commands, end to end on the local backend.

Real tasks run through the broker and ``bridge-agent``; the agent measures each
executor (peak RSS and CPU time from ``wait4``), and ``bridge report`` writes one HTML
file that must stand alone: no script, no stylesheet or image fetched from anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.accounts import Accounts
from bridge.cli import main
from bridge.client import BridgeClient
from bridge.config import Settings
from bridge.db import make_engine, upgrade
from bridge.server import free_port, serve_in_thread

# about 50 MiB held and a little CPU burnt, so both figures are clearly non-zero
HUNGRY = (
    "import time; b = bytearray(50 * 2**20); t = time.process_time(); [0 for _ in range(10**6)]"
)


@pytest.fixture
def live(settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    settings = settings.model_copy(update={"port": free_port()})
    settings.broker.poll_interval_s = 0.2
    settings.targets[0].cost_per_cpu_hour = 3.6
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    accounts = Accounts(engine)
    accounts.add_user("ada")
    _, token = accounts.create_token("ada")
    engine.dispose()
    with serve_in_thread(settings) as url, BridgeClient(url, token=token) as client:
        yield {"url": url, "client": client, "token": token, "settings": settings}


def test_report_is_one_self_contained_file_with_usage_and_failures(
    live: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    client: BridgeClient = live["client"]
    ok = client.submit(
        {
            "name": "hungry",
            "tags": {"workflow": "wf-report"},
            "executors": [{"image": "python", "command": [sys.executable, "-c", HUNGRY]}],
        }
    )
    bad = client.submit(
        {
            "name": "fails-loudly",
            "tags": {"workflow": "wf-report"},
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "echo the-cause-is-here >&2; exit 4"]}
            ],
        }
    )
    done = ok.result(timeout=90)
    assert bad.wait(timeout=90)["state"] == "EXECUTOR_ERROR"
    assert done["logs"][-1]["logs"][0]["exit_code"] == 0
    # the agent's own measurements reach the dashboard's task page
    page = httpx.get(
        f"{live['url']}/tasks/{ok.id}", headers={"Authorization": f"Bearer {live['token']}"}
    )
    match = re.search(r"CPU ([0-9.]+) s · peak RSS ([0-9.]+) MiB", page.text)
    assert match is not None, page.text[-2000:]
    assert float(match.group(1)) > 0 and float(match.group(2)) >= 50

    # the broker counted what it did (process-wide counters: at least these tasks)
    scraped = httpx.get(
        f"{live['url']}/metrics", headers={"Authorization": f"Bearer {live['token']}"}
    ).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(scraped)
        for s in family.samples
    }
    assert (
        samples[("bridge_task_finishes_total", (("state", "COMPLETE"), ("target", "local")))] >= 1
    )
    assert (
        samples[("bridge_task_finishes_total", (("state", "EXECUTOR_ERROR"), ("target", "local")))]
        >= 1
    )
    assert (
        samples[("bridge_placement_decisions_total", (("kind", "only_fit"), ("target", "local")))]
        >= 2
    )
    assert samples[("bridge_queue_wait_seconds_count", (("target", "local"),))] >= 2
    assert samples[("bridge_probe_seconds_count", (("target", "local"),))] >= 1

    out = tmp_path / "report.html"
    monkeypatch.setenv("BRIDGE_TOKEN", live["token"])
    assert (
        main(["--server", live["url"], "report", "--tag", "workflow=wf-report", "-o", str(out)])
        == 0
    )
    html = out.read_text()
    assert "Workflow report: workflow=wf-report" in html
    assert "hungry" in html and "fails-loudly" in html
    assert "the-cause-is-here" in html  # the failure's log tail
    assert "placed on" not in html or "local" in html
    assert "<script" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html
    # failures come first in the table
    table = html[html.index('id="report-tasks"') :]
    assert table.index("fails-loudly") < table.index("hungry")

    monkeypatch.setenv("BRIDGE_TOKEN", "wrong")
    assert (
        main(["--server", live["url"], "report", "--tag", "workflow=wf-report", "-o", str(out)])
        == 2
    )


def test_users_and_tokens_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["users", "add", "carol", "--role", "admin", *data]) == 0
    assert main(["users", "add", "dave", *data]) == 0
    assert main(["users", "add", "dave", *data]) == 2  # exists already
    assert main(["users", "add", "bad name!", *data]) == 2
    assert main(["users", "list", *data]) == 0
    listed = capsys.readouterr().out
    assert re.search(r"carol\s+admin", listed) and re.search(r"dave\s+user", listed)
    assert main(["tokens", "create", "dave", "--expires", "30d", *data]) == 0
    printed = capsys.readouterr().out
    token_id, token = re.search(r"token (\d+) for dave: (\S+)", printed).groups()  # type: ignore[union-attr]
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'bridge.db'}")
    accounts = Accounts(engine)
    from bridge.accounts import token_digest

    assert accounts.lookup(token_digest(token)) is not None
    assert main(["tokens", "revoke", token_id, *data]) == 0
    assert accounts.lookup(token_digest(token)) is None
    assert main(["tokens", "create", "nobody", *data]) == 2
    assert main(["token", *data]) == 1  # users exist: no local admin is made
    engine.dispose()


def test_bridge_token_makes_the_local_admin_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["token", *data]) == 0
    token = capsys.readouterr().out.split("shown once): ")[1].split()[0]
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'bridge.db'}")
    from bridge.accounts import token_digest

    account = Accounts(engine).lookup(token_digest(token))
    assert account is not None and account.admin and account.name == "admin"
    assert main(["token", *data]) == 1
    engine.dispose()
