"""The reference Python TES client, py-tes 1.1.4, drives a live server end to end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tes

from bridge.config import Settings
from bridge.server import free_port, serve_in_thread


@pytest.fixture
def tes_client(settings: Settings) -> Iterator[tes.HTTPClient]:
    settings = settings.model_copy(update={"port": free_port()})
    settings.broker.poll_interval_s = 0.2
    with serve_in_thread(settings) as url:
        yield tes.HTTPClient(url, timeout=10)


def test_py_tes_creates_lists_gets_waits_and_cancels(
    tes_client: tes.HTTPClient, tmp_path: Path
) -> None:
    info = tes_client.get_service_info()
    assert info.type["artifact"] == "tes"  # py-tes keeps service-info "type" as a dict

    out = tmp_path / "out.txt"
    task = tes.Task(
        name="py-tes-hello",
        inputs=[tes.Input(path="/data/in.txt", content="from py-tes")],
        outputs=[tes.Output(path="/data/out.txt", url=f"file://{out}")],
        executors=[tes.Executor(image="alpine", command=["cp", "/data/in.txt", "/data/out.txt"])],
        resources=tes.Resources(cpu_cores=1, ram_gb=0.5),
        tags={"client": "py-tes"},
    )
    task_id = tes_client.create_task(task)
    assert isinstance(task_id, str) and task_id

    done = tes_client.wait(task_id, timeout=60)
    assert done.state == "COMPLETE"
    full = tes_client.get_task(task_id, view="FULL")
    assert full.name == "py-tes-hello"
    assert full.logs[-1].logs[0].exit_code == 0
    assert int(full.logs[-1].outputs[0].size_bytes) == len("from py-tes")
    assert out.read_text() == "from py-tes"

    basic = tes_client.get_task(task_id, view="BASIC")
    assert basic.inputs[0].content is None  # BASIC leaves content out

    listing = tes_client.list_tasks(view="BASIC")
    assert task_id in [t.id for t in listing.tasks]

    long_id = tes_client.create_task(
        tes.Task(executors=[tes.Executor(image="alpine", command=["sleep", "60"])])
    )
    deadline = time.monotonic() + 30
    while tes_client.get_task(long_id, view="MINIMAL").state not in ("INITIALIZING", "RUNNING"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    tes_client.cancel_task(long_id)
    deadline = time.monotonic() + 30
    while (state := tes_client.get_task(long_id, view="MINIMAL").state) != "CANCELED":
        assert state in ("INITIALIZING", "RUNNING", "CANCELING"), state
        assert time.monotonic() < deadline
        time.sleep(0.2)

    paged = tes_client.list_tasks(view="MINIMAL", page_size=1)
    assert len(paged.tasks) == 1 and paged.next_page_token
    second = tes_client.list_tasks(view="MINIMAL", page_size=1, page_token=paged.next_page_token)
    assert second.tasks[0].id != paged.tasks[0].id
