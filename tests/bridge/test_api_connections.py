"""The API never drops a connection it accepted.

16 clients POST for a minute, each pausing now and then for about as long as an
idle keep-alive connection lives (5 s for httpx and requests), which is when a
client reuses a connection that a server with a shorter keep-alive is closing.
Every POST must succeed; nothing is retried.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from bridge.config import Settings
from bridge.server import free_port, serve_in_thread

pytestmark = pytest.mark.slow

CLIENTS = 16
SECONDS = 65.0
TASK = {"executors": [{"image": "debian", "command": ["true"]}]}


def client_loop(url: str, seed: int, errors: list[str], counts: list[int]) -> None:
    rng = random.Random(seed)
    deadline = time.monotonic() + SECONDS
    with httpx.Client(base_url=url, timeout=30) as http:  # keep-alive expiry: 5 s
        while time.monotonic() < deadline:
            for _ in range(rng.randint(1, 20)):
                try:
                    response = http.post("/ga4gh/tes/v1/tasks", json=TASK)
                    if response.status_code != 200:
                        errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    counts[seed] += 1
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
            time.sleep(rng.choice([0.0, 0.05, rng.uniform(4.8, 5.2)]))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sixteen_clients_post_for_a_minute_without_one_error(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"port": free_port()})
    errors: list[str] = []
    counts = [0] * CLIENTS
    with serve_in_thread(settings, with_broker=False) as url:
        threads = [
            threading.Thread(target=client_loop, args=(url, n, errors, counts))
            for n in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(counts) > 1000, counts
    assert not errors, f"{len(errors)} of {sum(counts)} POSTs failed, e.g. {errors[:3]}"
