"""Submitting N tasks to Slurm: through the broker versus a plain ``sbatch`` loop.

Three cases on the local single-node Slurm (scripts/services/slurm.sh), each with
the same payload per task -- the node agent running one executor (``true``) from a
prepared work directory -- so the only difference is how jobs reach Slurm:

* ``sbatch_loop``    -- ``sbatch --parsable`` N times, one after another, for
  work directories prepared beforehand (what a script without a broker does);
* ``broker_plain``   -- N TES tasks POSTed to the broker, which routes them,
  writes their work directories and submits one job per task (array batching off);
* ``broker_arrays``  -- the same with array batching on (tasks that arrive together
  become ``--array`` jobs).

Submission rate: tasks/s from the first request until every task has a Slurm job id
(for the broker: the first POST until the API shows a job id for every task).
End-to-end: until every task has finished (``squeue`` for the loop, the API's
states for the broker; both polled every 0.2 s).

    .venv/bin/python bench/slurm_submit.py [--tasks 200] [--runner local|ssh]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge import workspace  # noqa: E402
from bridge.client import BridgeClient  # noqa: E402
from bridge.server import free_port  # noqa: E402

AGENT = str(Path(sys.executable).with_name("bridge-agent"))
PAYLOAD = {"image": "alpine", "command": ["true"]}


def read_env(name: str) -> dict[str, str]:
    path = REPO / ".services" / name / "env"
    if not path.exists():
        sys.exit(f"{path} missing: run scripts/services/{name}.sh first")
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def squeue_ids(env: dict[str, str], jobs: str | None = None) -> list[str]:
    argv = ["squeue", "-h", "--array", "-t", "PD,CF,R,CG", "-o", "%i"]
    if jobs:
        argv += ["-j", jobs]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False).stdout
    return out.split()


def wait_idle(env: dict[str, str], timeout: float = 300) -> None:
    """Let jobs of earlier cases drain before timing the next one."""
    deadline = time.monotonic() + timeout
    while squeue_ids(env) and time.monotonic() < deadline:
        time.sleep(0.5)


def sbatch_loop(n: int, root: Path, env: dict[str, str]) -> dict[str, float]:
    urls = []
    for i in range(n):
        url = str(root / f"task{i}")
        workspace.write_task(
            url,
            {"id": f"loop{i}", "executors": [PAYLOAD]},
            {"container_runtime": "none", "attempt": 1},
        )
        urls.append(url)
    started = time.monotonic()
    ids = []
    for i, url in enumerate(urls):
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name=loop{i}",
            f"--chdir={url}",
            f"--output={url}/agent.log",
            "--wrap",
            f"{AGENT} run {url} --attempt 1",
        ]
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
        ids.append(out.strip().split(";")[0])
    submitted = time.monotonic() - started
    while squeue_ids(env, ",".join(ids)):
        time.sleep(0.2)
    total = time.monotonic() - started
    done = sum(
        1
        for url in urls
        if (json.loads((Path(url) / "attempts/1/status.json").read_text())["state"] == "COMPLETE")
    )
    return {"submit_s": submitted, "end_to_end_s": total, "completed": done}


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def start_broker(data_dir: Path, target: dict[str, object]) -> tuple[subprocess.Popen[bytes], str]:
    """``bridge serve`` in a process of its own, as it runs in production."""
    data_dir.mkdir(parents=True)
    config = data_dir / "bridge.toml"
    lines = ["[[targets]]"]  # the broker's defaults otherwise
    lines += [f"{k} = {toml_value(v)}" for k, v in target.items()]
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    log = open(data_dir / "serve.log", "wb")  # noqa: SIM115 -- the server process keeps it
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("bridge")),
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"bridge serve did not start; see {data_dir / 'serve.log'}")


def through_broker(n: int, data_dir: Path, target: dict[str, object]) -> dict[str, float]:
    run = data_dir.name
    proc, url = start_broker(data_dir, target)

    async def post_all() -> tuple[float, list[str]]:
        """POST the tasks as a workflow engine would: many requests in flight."""
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=url + "/ga4gh/tes/v1", limits=limits) as http:
            await http.get("/service-info")  # connections warm, outside the timing
            gate = asyncio.Semaphore(16)

            async def one(i: int) -> str:
                async with gate:
                    body = {"name": f"{run}-{i}", "tags": {"bench": run}, "executors": [PAYLOAD]}
                    response = await http.post("/tasks", json=body)
                    response.raise_for_status()
                    return str(response.json()["id"])

            started = time.monotonic()
            return started, await asyncio.gather(*(one(i) for i in range(n)))

    try:
        with BridgeClient(url) as watcher:
            started, ids = asyncio.run(post_all())
            # The broker records a job id and leaves QUEUED in one transaction, so
            # "no task QUEUED" (a cheap MINIMAL listing) means "every task has a job id".
            while True:
                page = watcher.list_tasks(tags={"bench": run}, page_size=2000)["tasks"]
                if len(page) == n and all(t["state"] != "QUEUED" for t in page):
                    break
                time.sleep(0.02)
            submitted = time.monotonic() - started
            with_job = watcher.list_tasks(view="BASIC", tags={"bench": run}, page_size=2000)[
                "tasks"
            ]
            job_ids = {t["logs"][-1]["metadata"]["backend_job_id"] for t in with_job}
            while True:
                states = [
                    t["state"]
                    for t in watcher.list_tasks(tags={"bench": run}, page_size=2000)["tasks"]
                ]
                if all(
                    s in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED") for s in states
                ):
                    break
                time.sleep(0.2)
            total = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(30)
    assert len(ids) == n
    arrays = len({j.split("_")[0] for j in job_ids})
    return {
        "submit_s": submitted,
        "end_to_end_s": total,
        "completed": states.count("COMPLETE"),
        "sbatch_calls": arrays,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--runner", choices=["local", "ssh"], default="local")
    args = parser.parse_args()
    n = args.tasks
    slurm_env = read_env("slurm")
    env = {**os.environ, **slurm_env}
    ssh = read_env("sshd") if args.runner == "ssh" else {}

    def target(arrays: bool) -> dict[str, object]:
        config: dict[str, object] = {
            "name": "hpc",
            "kind": "slurm",
            "container_runtime": "none",
            "array_batching": arrays,
            "env": slurm_env,
        }
        if ssh:
            config.update(
                runner="ssh",
                host=ssh["SSH_HOST"],
                port=int(ssh["SSH_PORT"]),
                user=ssh["SSH_USER"],
                key_file=ssh["SSH_KEY"],
                known_hosts=ssh["SSH_KNOWN_HOSTS"],
            )
        return config

    print(
        f"{n} tasks (the agent running `true`) on the local single-node Slurm, "
        f"broker runner: {args.runner}"
    )
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        root = Path(tmp)
        cases = {
            "sbatch_loop": lambda: sbatch_loop(n, root / "loop", env),
            "broker_plain": lambda: through_broker(n, root / "plain", target(False)),
            "broker_arrays": lambda: through_broker(n, root / "arrays", target(True)),
        }
        for name, case in cases.items():
            wait_idle(env)
            figures = case()
            figures["tasks_per_s"] = n / figures["submit_s"]
            results[name] = {k: round(v, 3) for k, v in figures.items()}
            print(
                f"{name:<14} submit {figures['submit_s']:7.2f} s  {figures['tasks_per_s']:8.1f} tasks/s  "
                f"all finished after {figures['end_to_end_s']:6.2f} s  "
                f"({int(figures['completed'])}/{n} COMPLETE)"
                + (
                    f"  {int(figures['sbatch_calls'])} sbatch calls"
                    if "sbatch_calls" in figures
                    else ""
                )
            )
    loop = results["sbatch_loop"]
    summary = {
        "tasks": n,
        "runner": args.runner,
        **results,
        "ratio_plain": round(results["broker_plain"]["tasks_per_s"] / loop["tasks_per_s"], 2),
        "ratio_arrays": round(results["broker_arrays"]["tasks_per_s"] / loop["tasks_per_s"], 2),
        "e2e_speedup_plain": round(
            loop["end_to_end_s"] / results["broker_plain"]["end_to_end_s"], 2
        ),
        "e2e_speedup_arrays": round(
            loop["end_to_end_s"] / results["broker_arrays"]["end_to_end_s"], 2
        ),
    }
    print(
        f"submission rate vs the sbatch loop: broker x{summary['ratio_plain']}, "
        f"broker with arrays x{summary['ratio_arrays']}; end-to-end speed-up "
        f"x{summary['e2e_speedup_plain']} / x{summary['e2e_speedup_arrays']}"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
