"""TES API throughput and listing latency, against a bare FastAPI endpoint.

1. ``POST /tasks`` rate: the broker's API (validation, one SQLite transaction per
   task, WAL, broker loop not running) versus a bare FastAPI/uvicorn endpoint that
   reads the body and returns an id.  Both run as one uvicorn process on 127.0.0.1
   with the same options; ``wrk`` (Debian ``wrk``) drives each in turn with the same
   task document, connections and duration.
2. ``GET /tasks`` latency with 100,000 tasks stored: p50/p99 of the default MINIMAL
   page (256 tasks), a BASIC page, a tag-filtered page and a page 50 pages deep.

Run: ``.venv/bin/python bench/tes_api.py``.  The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TASK = {
    "name": "bench-task",
    "inputs": [{"url": "s3://bucket/in.txt", "path": "/data/in.txt"}],
    "outputs": [{"url": "s3://bucket/out.txt", "path": "/data/out.txt"}],
    "resources": {"cpu_cores": 1, "ram_gb": 1},
    "executors": [
        {"image": "alpine", "command": ["sh", "-c", "wc -l /data/in.txt > /data/out.txt"]}
    ],
    "tags": {"workflow": "bench"},
}

BARE_APP = """
import uuid
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
app = FastAPI()
@app.post("/ga4gh/tes/v1/tasks")
async def create(request: Request):
    await request.body()
    return JSONResponse({"id": uuid.uuid4().hex})
"""

BRIDGE_APP = """
import os
from pathlib import Path
from bridge.config import load_settings
from bridge.server import build
settings = load_settings(data_dir=os.environ["BENCH_DATA_DIR"])
app, _, _ = build(settings, with_broker=False)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(app_dir: Path, module: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"{module}:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=app_dir,
        env={**os.environ, **env, "PYTHONPATH": f"{app_dir}:{ROOT}"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{module} did not start")


def wrk_post(url: str, body_file: Path, seconds: int, connections: int) -> float:
    script = body_file.with_suffix(".lua")
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'local f = io.open("{body_file}", "r")\nwrk.body = f:read("*a")\nf:close()\n'
    )
    out = subprocess.run(
        [
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "-s",
            str(script),
            url + "/ga4gh/tes/v1/tasks",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} requests failed:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise RuntimeError(out)
    return float(match.group(1))


def preload(data_dir: Path, count: int) -> None:
    """Insert ``count`` tasks straight through the store's engine, in bulk."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import insert

    from bridge.config import load_settings
    from bridge.db import make_engine, upgrade
    from bridge.store import EVENTS, TAGS, T, new_task_id, utcnow

    settings = load_settings(data_dir=str(data_dir))
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    doc = json.dumps(TASK)
    now = utcnow()
    with engine.begin() as conn:
        start = (
            conn.execute(
                T.select().with_only_columns(T.c.seq).order_by(T.c.seq.desc()).limit(1)
            ).scalar()
            or 0
        )
        rows, tags, events = [], [], []
        for i in range(count):
            seq = start + i + 1
            rows.append(
                {
                    "seq": seq,
                    "id": new_task_id(),
                    "owner": "anonymous",
                    "name": f"bench-{i}",
                    "state": "COMPLETE" if i % 3 else "QUEUED",
                    "document": doc,
                    "creation_time": now,
                    "updated_time": now,
                    "placement_reason": "",
                    "attempt": 0,
                }
            )
            tags.append({"task_seq": seq, "key": "workflow", "value": f"w{i % 100}"})
            events.append(
                {
                    "task_seq": seq,
                    "at": now,
                    "from_state": "UNKNOWN",
                    "to_state": "QUEUED",
                    "reason": "submitted",
                }
            )
        for chunk in range(0, count, 10_000):
            conn.execute(insert(T), rows[chunk : chunk + 10_000])
            conn.execute(insert(TAGS), tags[chunk : chunk + 10_000])
            conn.execute(insert(EVENTS), events[chunk : chunk + 10_000])
    engine.dispose()


def latencies(client: httpx.Client, path: str, n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        response.raise_for_status()
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/tes_api.py needs wrk: apt-get install wrk")

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "bare_app.py").write_text(BARE_APP)
        (tmpdir / "bridge_app.py").write_text(BRIDGE_APP)
        body = tmpdir / "task.json"
        body.write_text(json.dumps(TASK))
        data_dir = tmpdir / "data"
        env = {"BENCH_DATA_DIR": str(data_dir)}

        bare, bare_url = start(tmpdir, "bare_app", env)
        ours, our_url = start(tmpdir, "bridge_app", env)
        bare_rates, our_rates = [], []
        try:
            for _ in range(args.rounds):  # interleaved, so drift hits both alike
                bare_rates.append(wrk_post(bare_url, body, args.seconds, args.connections))
                our_rates.append(wrk_post(our_url, body, args.seconds, args.connections))
        finally:
            bare.terminate()
            ours.terminate()
            bare.wait()
            ours.wait()
        bare_rate, our_rate = statistics.median(bare_rates), statistics.median(our_rates)
        print(
            f"POST /tasks  bare FastAPI {bare_rate:8.0f}/s   converged-bridge {our_rate:8.0f}/s   "
            f"ratio {our_rate / bare_rate:.2f}  (median of {args.rounds} interleaved {args.seconds}s wrk runs, "
            f"{args.connections} connections)"
        )

        existing = int(sum(our_rates) * args.seconds)
        preload(data_dir, max(0, args.tasks - existing))
        ours, our_url = start(tmpdir, "bridge_app", env)
        try:
            with httpx.Client(base_url=our_url + "/ga4gh/tes/v1", timeout=30) as client:
                total = 0
                token = None
                pages = 0
                deep = None
                while True:  # walk every page once: proves the count and warms the cache
                    page = client.get(
                        "/tasks",
                        params={"page_size": 2000, **({"page_token": token} if token else {})},
                    ).json()
                    total += len(page["tasks"])
                    pages += 1
                    token = page.get("next_page_token")
                    if pages == 25:
                        deep = token  # 50,000 tasks down
                    if not token:
                        break
                results = {
                    "minimal": latencies(client, "/tasks", args.samples),
                    "basic": latencies(client, "/tasks?view=BASIC", max(50, args.samples // 3)),
                    "tag_filter": latencies(
                        client, "/tasks?tag_key=workflow&tag_value=w7", args.samples
                    ),
                    "state_filter": latencies(client, "/tasks?state=QUEUED", args.samples),
                    "deep_page": latencies(client, f"/tasks?page_token={deep}", args.samples),
                }
        finally:
            ours.terminate()
            ours.wait()
    print(f"GET /tasks with {total} tasks stored ({pages} pages of 2000 walked):")
    for name, figures in results.items():
        print(f"  {name:<13} p50 {figures['p50_ms']:6.2f} ms   p99 {figures['p99_ms']:6.2f} ms")
    summary = {
        "create_rate_ratio": round(our_rate / bare_rate, 3),
        "create_rate_per_s": round(our_rate, 1),
        "bare_rate_per_s": round(bare_rate, 1),
        "tasks_stored": total,
        "list_p50_ms": results["minimal"]["p50_ms"],
        "list_p99_ms": results["minimal"]["p99_ms"],
        "list_basic_p99_ms": results["basic"]["p99_ms"],
        "list_tag_p99_ms": results["tag_filter"]["p99_ms"],
        "list_state_p99_ms": results["state_filter"]["p99_ms"],
        "list_deep_page_p99_ms": results["deep_page"]["p99_ms"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
